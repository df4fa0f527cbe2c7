"""Dask runtime: the client/cluster factory, GPU resources, a per-worker model cache, progress.

Every wing runs its stages through one :class:`distributed.Client` built here (DESIGN.md,
"Runtime"):

* ``local`` (default): a :class:`~distributed.LocalCluster` of worker *processes* with one thread
  each. Workers start with ``spawn`` (or ``forkserver``), never ``fork``: LibRaw's OpenMP threads
  deadlock in a forked child, and CUDA cannot be re-initialised after fork either.
* ``scheduler``: attach to a scheduler that is already running, by address.
* ``slurm``: dask-jobqueue's :class:`~dask_jobqueue.SLURMCluster`; ``slurm_job_script`` prints the
  batch script without submitting anything (``--dry-run``).
* ``cuda``: dask-cuda's ``LocalCUDACluster``, one worker per GPU (extra ``inscene[cuda]``).

GPU work is scheduled through Dask *resources*: workers that own a GPU advertise ``GPU=n`` and GPU
stages ask for ``GPU=1`` (:func:`gpu_annotation`, :func:`gpu_resources`). A cluster without GPU
workers advertises nothing, and GPU annotations are then dropped rather than leaving tasks that no
worker could ever run.

Heavy models are loaded once per worker process through :func:`cached_backend`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Literal, TypeVar

import dask
from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from inscene.errors import BadInputError

T = TypeVar("T")

#: Console used for runtime messages (dashboard link, progress). It writes to stderr so that
#: stdout stays clean for machine-readable output.
console = Console(stderr=True)

_MP_METHOD_KEY = "distributed.worker.multiprocessing-method"
_DEFAULT_DASHBOARD = ":8787"


class ClusterOptions(BaseModel):
    """Where and how the Dask workers run. Field descriptions double as CLI help."""

    model_config = ConfigDict(extra="forbid")

    cluster: Literal["local", "slurm", "cuda"] = Field(
        "local",
        description="Cluster kind: 'local' worker processes, 'slurm' jobs via dask-jobqueue, or "
        "'cuda' (one worker per GPU via dask-cuda).",
    )
    scheduler: str | None = Field(
        None,
        description="Address of a running Dask scheduler to attach to (e.g. tcp://host:8786); overrides --cluster.",
    )
    connect_timeout: str = Field("30s", description="How long to keep trying to reach --scheduler before giving up.")
    workers: int | None = Field(
        None,
        ge=1,
        description="Number of local worker processes (default: the number of CPUs; for 'cuda': one per GPU).",
    )
    threads_per_worker: int = Field(
        1, ge=1, description="Threads per worker process (keep 1 for GIL-bound image work)."
    )
    memory_per_worker: str | None = Field(
        None, description="Memory limit per local worker, e.g. '4GB' (default: RAM / CPUs)."
    )
    start_method: Literal["spawn", "forkserver"] = Field(
        "spawn",
        description="How worker processes start. Never fork: LibRaw's OpenMP threads (and CUDA) "
        "deadlock in a forked child.",
    )
    queue: str | None = Field(None, description="SLURM partition (#SBATCH -p).")
    account: str | None = Field(None, description="SLURM account (#SBATCH -A).")
    cores: int = Field(8, ge=1, description="CPU cores per SLURM job.")
    memory: str = Field("32GB", description="Memory per SLURM job.")
    gpus: int = Field(
        0,
        ge=0,
        description="GPUs per SLURM job (adds --gres=gpu:N and gives the job's worker GPU=N).",
    )
    walltime: str = Field("04:00:00", description="Wall-clock limit per SLURM job (#SBATCH -t).")
    jobs: int = Field(1, ge=0, description="Number of SLURM jobs to submit.")
    job_extra: list[str] = Field(
        default_factory=list,
        description="Extra #SBATCH directives, e.g. '--constraint=a100' (repeatable).",
    )
    dry_run: bool = Field(False, description="Print the SLURM job script instead of submitting any job.")
    dashboard: bool = Field(True, description="Serve the Dask dashboard and print its link.")

    def n_workers(self) -> int:
        """Number of local workers: ``workers`` or, when unset, ``os.cpu_count()``."""
        return self.workers or os.cpu_count() or 1


# --------------------------------------------------------------------------------------------
# GPUs
# --------------------------------------------------------------------------------------------


def visible_gpus() -> list[str]:
    """CUDA devices this process may use, as ``CUDA_VISIBLE_DEVICES`` entries.

    ``CUDA_VISIBLE_DEVICES`` wins when set (``""`` or ``-1`` mean none); otherwise the devices are
    counted through torch when it is already imported, else ``nvidia-smi -L``. CUDA itself is never
    initialised here, so the result is safe to compute before starting worker processes.

    Returns:
        Device identifiers (indices, or UUIDs/MIG ids when the variable names those); empty on a
        CPU-only machine.
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [p.strip() for p in env.split(",") if p.strip()]
        # CUDA stops enumerating at the first invalid entry, conventionally -1.
        out: list[str] = []
        for dev in ids:
            if dev.startswith("-"):
                break
            out.append(dev)
        return out
    count = 0
    torch = sys.modules.get("torch")
    if torch is not None:
        with contextlib.suppress(Exception):
            count = int(torch.cuda.device_count())
    else:
        smi = shutil.which("nvidia-smi")
        if smi:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                res = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20)
                if res.returncode == 0:
                    count = sum(1 for line in res.stdout.splitlines() if line.startswith("GPU "))
    return [str(i) for i in range(count)]


def _split_gpus(gpus: list[str], n_workers: int) -> list[list[str]]:
    """Assign GPUs to workers round-robin; workers beyond the GPU count get none."""
    return [gpus[i::n_workers] for i in range(n_workers)]


def _client_has_gpus(client: Any) -> bool:
    # A SLURM cluster asked for GPU jobs that may still be queued: its workers will advertise GPU
    # when they join, so GPU tasks must be annotated now (an unannotated task would let one
    # many-threaded GPU worker run several GPU tasks on one device at once).
    if getattr(getattr(client, "cluster", None), "inscene_gpus", 0):
        return True
    info = client.scheduler_info(n_workers=-1)
    return any((w.get("resources") or {}).get("GPU", 0) > 0 for w in info.get("workers", {}).values())


def _current_client(client: Any | None) -> Any | None:
    if client is not None:
        return client
    from distributed import get_client

    try:
        return get_client()
    except ValueError:
        return None


def cluster_has_gpus(client: Any | None = None) -> bool:
    """Whether any worker of the cluster advertises a ``GPU`` resource.

    Args:
        client: the client to ask; default: the current client (``distributed.get_client()``).

    Returns:
        False when no client is running.
    """
    client = _current_client(client)
    return client is not None and _client_has_gpus(client)


def gpu_resources(client: Any | None = None, amount: float = 1) -> dict[str, float] | None:
    """Resources to pass to ``client.submit``/``client.map`` for a GPU task.

    Args:
        client: the client whose workers are checked; default: the current client.
        amount: GPUs one task holds.

    Returns:
        ``{"GPU": amount}`` when the cluster has GPU workers, else ``None`` (so the task can still
        run, on CPU, instead of waiting forever for a resource no worker offers).
    """
    return {"GPU": amount} if cluster_has_gpus(client) else None


@contextlib.contextmanager
def gpu_annotation(client: Any | None = None, amount: float = 1) -> Iterator[bool]:
    """Annotate the Dask tasks built in this block as needing ``amount`` GPUs.

    Inside the block, ``dask.annotate(resources={"GPU": amount})`` is active only when the cluster
    has GPU workers; on a CPU-only cluster the block runs unannotated, since a task asking for a
    resource that no worker advertises would never be scheduled. Annotations apply to dask
    collections (``dask.delayed``, bags, dataframes) built inside the block; for futures pass
    ``resources=gpu_resources(client)`` to ``client.submit`` instead.

    Args:
        client: the client whose workers are checked; default: the current client.
        amount: GPUs each task holds.

    Yields:
        Whether the annotation is active.
    """
    if cluster_has_gpus(client):
        with dask.annotate(resources={"GPU": amount}):
            yield True
    else:
        yield False


# --------------------------------------------------------------------------------------------
# Client factory
# --------------------------------------------------------------------------------------------


def _scheduler_http(opts: ClusterOptions) -> dict[str, Any]:
    """Scheduler options for the dashboard.

    The scheduler always runs an HTTP server (health, metrics); without a dashboard it binds a
    random free port (``:0``) so that several clusters on one machine never clash over 8787.
    """
    if opts.dashboard:
        return {"dashboard_address": _DEFAULT_DASHBOARD}
    return {"dashboard_address": ":0", "dashboard": False}


def _say(con: Console, text: str) -> None:
    """One plain line: no markup, highlighting or wrapping (log files stay greppable)."""
    con.print(text, highlight=False, markup=False, soft_wrap=True)


def _announce(client: Any, opts: ClusterOptions, con: Console, what: str) -> None:
    _say(con, f"Dask: {what}")
    if not opts.dashboard:
        return
    services = client.scheduler_info(n_workers=0).get("services", {})
    if "dashboard" in services:
        _say(con, f"Dask dashboard: {client.dashboard_link}")
    else:
        _say(con, "Dask dashboard unavailable (install bokeh>=3.1 to serve it)")


def _local_client(opts: ClusterOptions) -> tuple[Any, str]:
    from distributed import Client, LocalCluster

    n = opts.n_workers()
    gpus = visible_gpus()
    kwargs: dict[str, Any] = {
        "processes": True,
        "threads_per_worker": opts.threads_per_worker,
        "memory_limit": opts.memory_per_worker or "auto",
        "dashboard_address": _scheduler_http(opts)["dashboard_address"],
        "scheduler_kwargs": {"dashboard": opts.dashboard},
    }
    # The start method is read when each Nanny spawns its worker, so the setting must cover the
    # whole start-up, including waiting for the workers below. Workers restarted later fall back
    # to the global default, which in distributed is also spawn.
    with dask.config.set({_MP_METHOD_KEY: opts.start_method}):
        if not gpus:
            cluster = LocalCluster(n_workers=n, **kwargs)
            client = Client(cluster)
            return client, f"local cluster, {n} workers x {opts.threads_per_worker} thread(s)"
        # Per-worker specs: each worker owns its share of the GPUs (GPU=len(share), pinned via
        # CUDA_VISIBLE_DEVICES); workers without a share see no GPU at all, so CPU stages cannot
        # grab a device the scheduler thinks is free.
        cluster = LocalCluster(n_workers=0, **kwargs)
        base = cluster.new_spec
        for i, share in enumerate(_split_gpus(gpus, n)):
            options = dict(base["options"])
            env = dict(options.get("env") or {})
            env["CUDA_VISIBLE_DEVICES"] = ",".join(share)
            options["env"] = env
            if share:
                options["resources"] = {"GPU": len(share)}
            cluster.worker_spec[i] = {"cls": base["cls"], "options": options}
        cluster.scale(n)
        client = Client(cluster)
        client.wait_for_workers(n, timeout=300)
    return client, (
        f"local cluster, {n} workers x {opts.threads_per_worker} thread(s), "
        f"{len(gpus)} GPU(s) on {min(n, len(gpus))} worker(s)"
    )


def _cuda_client(opts: ClusterOptions) -> tuple[Any, str]:
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError:
        raise BadInputError(
            "--cluster cuda needs dask-cuda, which is not installed: "
            'pip install "inscene[cuda]" (or use --cluster local, which also uses visible GPUs)'
        ) from None
    from distributed import Client

    kwargs: dict[str, Any] = {
        "threads_per_worker": opts.threads_per_worker,
        "memory_limit": opts.memory_per_worker or "auto",
        "dashboard_address": _scheduler_http(opts)["dashboard_address"],
        # dask-cuda pins one GPU per worker; advertise it so GPU stages find it.
        "resources": {"GPU": 1},
    }
    if opts.workers is not None:
        kwargs["n_workers"] = opts.workers
    with dask.config.set({_MP_METHOD_KEY: opts.start_method}):
        cluster = LocalCUDACluster(**kwargs)
        client = Client(cluster)
    n = len(client.scheduler_info(n_workers=-1).get("workers", {}))
    return client, f"dask-cuda cluster, {n} GPU worker(s)"


def _slurm_kwargs(opts: ClusterOptions) -> dict[str, Any]:
    """Translate ClusterOptions into SLURMCluster keyword arguments.

    CPU jobs run ``cores // threads_per_worker`` worker processes. A job with GPUs runs a single
    worker process holding all of its GPUs (``--resources GPU=N``) and ``cores`` threads: separate
    processes in one job cannot each be pinned to their own GPU without dask-cuda, and giving each
    of them ``GPU=N`` would oversubscribe the devices. For one task per GPU, use ``gpus=1`` and
    more ``jobs``.
    """
    job_extra = list(opts.job_extra)
    worker_args: list[str] = []
    if opts.gpus:
        job_extra.append(f"--gres=gpu:{opts.gpus}")
        worker_args += ["--resources", f"GPU={opts.gpus}"]
        processes = 1
    else:
        processes = max(1, opts.cores // opts.threads_per_worker)
    return {
        "queue": opts.queue,
        "account": opts.account,
        "cores": opts.cores,
        "memory": opts.memory,
        "processes": processes,
        "walltime": opts.walltime,
        "job_extra_directives": job_extra,
        "worker_extra_args": worker_args,
        # The dask-worker CLI reads the start method from its config; pass ours explicitly.
        "job_script_prologue": ["export DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD=" + opts.start_method],
        "scheduler_options": _scheduler_http(opts),
    }


def _slurm_cluster(opts: ClusterOptions, **overrides: Any) -> Any:
    from dask_jobqueue import SLURMCluster

    kwargs = _slurm_kwargs(opts)
    kwargs.update(overrides)
    # Constructing the cluster starts a local scheduler only; jobs are submitted by scale().
    return SLURMCluster(**kwargs)


def slurm_job_script(opts: ClusterOptions) -> str:
    """The batch script each SLURM job would run, without submitting anything.

    Works on machines without ``sbatch``: the cluster object only starts a local scheduler, which
    is closed again before returning. The scheduler address inside the script is replaced by a
    placeholder, since the real one exists only while a cluster runs.

    Args:
        opts: cluster options (``cluster`` need not be ``"slurm"``).

    Returns:
        The job script text (``#!`` line, ``#SBATCH`` directives, prologue, worker command).
    """
    cluster = _slurm_cluster(opts, scheduler_options={"dashboard_address": ":0", "dashboard": False})
    try:
        script = cluster.job_script()
        address = cluster.scheduler_address
    finally:
        cluster.close()
    if address:
        script = script.replace(address, "tcp://<scheduler-address>:8786")
    return script


def _slurm_client(opts: ClusterOptions) -> tuple[Any, str]:
    from distributed import Client

    if opts.dry_run:
        raise BadInputError(
            "dry_run is set: call slurm_job_script(opts) to print the job script; make_client would submit jobs"
        )
    if shutil.which("sbatch") is None:
        raise BadInputError(
            "--cluster slurm needs the SLURM 'sbatch' command on PATH (run from a login node), "
            "or use --dry-run to print the job script"
        )
    cluster = _slurm_cluster(opts)
    cluster.inscene_gpus = opts.gpus  # read by cluster_has_gpus before the jobs have started
    cluster.scale(jobs=opts.jobs)
    client = Client(cluster)
    return client, f"SLURM cluster, {opts.jobs} job(s) requested ({opts.cores} cores each)"


def make_client(opts: ClusterOptions | None = None, *, console: Console | None = None) -> Any:
    """Build the Dask client the options describe and print the dashboard link.

    Args:
        opts: cluster options; default: a local cluster with one single-threaded worker process
            per CPU.
        console: where to print (default: the module console, on stderr).

    Returns:
        A connected :class:`distributed.Client`. Close it with :func:`close_client`, which also
        closes a cluster this function started (but never a scheduler it merely attached to).

    Raises:
        BadInputError: unreachable scheduler, ``cuda`` without dask-cuda, ``slurm`` without
            ``sbatch`` or with ``dry_run`` set.
    """
    opts = opts or ClusterOptions()
    con = console or globals()["console"]
    if opts.scheduler:
        from distributed import Client

        try:
            client = Client(opts.scheduler, timeout=opts.connect_timeout)
        except (OSError, TimeoutError) as exc:
            raise BadInputError(f"cannot reach the Dask scheduler at {opts.scheduler}: {exc}") from exc
        what = f"attached to scheduler {opts.scheduler}"
    elif opts.cluster == "slurm":
        client, what = _slurm_client(opts)
    elif opts.cluster == "cuda":
        client, what = _cuda_client(opts)
    else:
        client, what = _local_client(opts)
    if not opts.scheduler:
        # Our own workers: library thread pools sized to the worker (attached schedulers' workers
        # belong to someone else and keep their settings).
        _register_thread_cap(client)
    _announce(client, opts, con, what)
    return client


def cap_library_threads(n: int) -> dict[str, int]:
    """Let OpenCV and torch use at most ``n`` threads in this process; return what was set.

    A worker with ``n`` task threads should not also run OpenCV's and torch's own thread pools
    at full width: with one single-threaded worker per core, every worker's ``cv2.resize`` would
    otherwise spread over all cores and the workers would fight each other. Measured with
    ``python -m benchmarks.perf filter-real`` on 2 cores: 1 worker 7.20 -> 6.67 images/s (it no
    longer borrows the second core), 2 workers 11.77 -> 11.92, speed-up 1.64 -> 1.79. Dask's nanny
    already sets ``OMP_NUM_THREADS=1`` for libraries read at import; OpenCV's pthreads pool
    ignores it, and torch may already be imported, so both are set here.
    """
    n = max(1, int(n))
    done: dict[str, int] = {}
    with contextlib.suppress(ImportError):
        import cv2

        cv2.setNumThreads(n)
        done["opencv"] = n
    if "torch" in sys.modules:  # never import torch just for this
        torch = sys.modules["torch"]
        torch.set_num_threads(n)
        done["torch"] = n
    return done


def _register_thread_cap(client: Any) -> None:
    from inscene.worker_setup import ThreadCap

    client.register_plugin(ThreadCap())


def close_client(client: Any) -> None:
    """Close a client from :func:`make_client` and the cluster it started, if any."""
    cluster = getattr(client, "cluster", None)
    client.close()
    if cluster is not None:
        cluster.close()


@contextlib.contextmanager
def open_client(opts: ClusterOptions | None = None, *, console: Console | None = None) -> Iterator[Any]:
    """Context manager around :func:`make_client` / :func:`close_client`."""
    client = make_client(opts, console=console)
    try:
        yield client
    finally:
        close_client(client)


def worker_info(dask_worker: Any | None = None) -> dict[str, Any]:
    """Describe the process this runs in (run it on a worker to check the runtime set-up).

    Args:
        dask_worker: the worker, as ``client.run`` passes it; default: ``get_worker()`` when
            called inside a task.

    Returns:
        ``pid``; ``start_method``: how the process was started (``spawn``, ``forkserver``,
        ``fork``, or ``main`` for a non-child process), read from the interpreter's original
        command line (``multiprocessing.get_start_method()`` reports the parent's *default*
        method, not how this process was started); ``nthreads`` and ``resources`` of the Dask
        worker (``None`` outside a worker); ``cuda_visible_devices``.
    """
    import multiprocessing

    if multiprocessing.parent_process() is None:
        method = "main"
    else:
        cmdline = " ".join(getattr(sys, "orig_argv", sys.argv))
        if "multiprocessing.spawn" in cmdline:
            method = "spawn"
        elif "multiprocessing.forkserver" in cmdline:
            method = "forkserver"
        else:
            method = "fork"
    nthreads = resources = None
    worker = dask_worker
    if worker is None:
        with contextlib.suppress(ValueError, ImportError):
            from distributed import get_worker

            worker = get_worker()
    if worker is not None:
        nthreads = worker.state.nthreads
        resources = dict(worker.state.total_resources)
    return {
        "pid": os.getpid(),
        "start_method": method,
        "nthreads": nthreads,
        "resources": resources,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
    }


# --------------------------------------------------------------------------------------------
# Per-worker model cache
# --------------------------------------------------------------------------------------------

_CACHE: dict[str, Any] = {}
_KEY_LOCKS: dict[str, threading.Lock] = {}
_GUARD = threading.Lock()


def cached_backend(key: str, factory: Callable[[], T]) -> T:
    """Return the object cached under ``key`` in this process, building it once with ``factory``.

    Heavy backends (an ONNX session, a diffusion pipeline) are built the first time a task on a
    worker process needs them and reused by every later task there. Threads asking for the same
    key wait for a single build; different keys build concurrently. A factory that raises caches
    nothing, so a later call retries.

    The cache is a module-level dict, i.e. one per worker process (each Dask worker is its own
    process here). It deliberately does not use ``distributed.get_worker().data``: that mapping
    holds task results and may spill them to disk or send them to other workers.

    Args:
        key: identifies the backend and its options, e.g. ``"embedder:antelopev2:cpu"``.
        factory: builds the backend; called at most once per process per key.

    Returns:
        The cached object.
    """
    try:
        return _CACHE[key]
    except KeyError:
        pass
    with _GUARD:
        lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with lock:
        if key in _CACHE:
            return _CACHE[key]
        value = factory()
        _CACHE[key] = value
        return value


def clear_cache(key: str | None = None) -> int:
    """Drop one cached backend (``key``) or all of them; returns how many were dropped."""
    with _GUARD:
        if key is None:
            n = len(_CACHE)
            _CACHE.clear()
            return n
        return 1 if _CACHE.pop(key, None) is not None else 0


# --------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------


def _as_futures(items: Any) -> list[Any] | None:
    if not isinstance(items, (list, tuple, set, frozenset)) or not items:
        return None
    from distributed import Future

    seq = list(items)
    return seq if all(isinstance(x, Future) for x in seq) else None


def progress(
    items: Iterable[T],
    description: str = "working",
    *,
    total: int | None = None,
    console: Console | None = None,
) -> Iterator[T]:
    """Iterate with a progress bar on stderr; one summary line at the end.

    A list of Dask futures is yielded in completion order (``distributed.as_completed``), counting
    failed futures in the summary; any other iterable is yielded in order. The live bar is drawn
    only when the console is a terminal, so logs and CI output get just the final line, e.g.
    ``scoring: 120/120 done in 4.2s (3 failed)``.

    Args:
        items: futures or any iterable.
        description: label of the bar and of the summary line.
        total: number of items when ``items`` has no ``len()``.
        console: where to draw (default: the module console, on stderr).

    Yields:
        The items (completed futures for futures).
    """
    con = console or globals()["console"]
    futures = _as_futures(items)
    if futures is not None:
        from distributed import as_completed

        iterator: Iterator[Any] = iter(as_completed(futures))
        total = len(futures)
    else:
        iterator = iter(items)
        if total is None and hasattr(items, "__len__"):
            total = len(items)  # type: ignore[arg-type]
    done = failed = 0
    start = time.perf_counter()
    try:
        if con.is_terminal:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )

            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            with Progress(*columns, console=con, transient=True) as bar:
                task = bar.add_task(description, total=total)
                for item in iterator:
                    done += 1
                    if futures is not None and getattr(item, "status", None) == "error":
                        failed += 1
                    bar.advance(task)
                    yield item
        else:
            for item in iterator:
                done += 1
                if futures is not None and getattr(item, "status", None) == "error":
                    failed += 1
                yield item
    finally:
        elapsed = time.perf_counter() - start
        count = f"{done}/{total}" if total is not None else str(done)
        line = f"{description}: {count} done in {elapsed:.1f}s"
        if failed:
            line += f" ({failed} failed)"
        _say(con, line)
