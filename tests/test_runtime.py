"""Tests for inscene.runtime: the Dask client factory, GPU resources, model cache, progress.

One LocalCluster (2 spawned single-threaded workers, no dashboard) is shared by the module; the
GPU test starts a second one with the GPU list faked, since CPU-only CI has no device.
"""

from __future__ import annotations

import io
import os
import sys
import threading
import uuid

import dask
import pytest
from pydantic import ValidationError
from rich.console import Console

from inscene import runtime
from inscene.errors import BadInputError
from inscene.runtime import (
    ClusterOptions,
    cached_backend,
    clear_cache,
    close_client,
    gpu_annotation,
    gpu_resources,
    make_client,
    progress,
    slurm_job_script,
    worker_info,
)


def _quiet() -> Console:
    return Console(file=io.StringIO(), force_terminal=False, width=200)


@pytest.fixture(scope="module")
def client():
    opts = ClusterOptions(workers=2, threads_per_worker=1, start_method="spawn", dashboard=False)
    c = make_client(opts, console=_quiet())
    yield c
    close_client(c)


# Task functions live at module level so spawned workers import them by reference.
_FACTORY_CALLS = 0


def _factory() -> tuple[int, str]:
    global _FACTORY_CALLS
    _FACTORY_CALLS += 1
    return os.getpid(), uuid.uuid4().hex


def _use_cached(_i: int) -> tuple[int, str, int]:
    pid, token = cached_backend("test-backend", _factory)
    return pid, token, _FACTORY_CALLS


def _double(x: int) -> int:
    return 2 * x


def _fail(x: int) -> int:
    raise ValueError(x)


def test_local_cluster_has_requested_workers_and_threads(client):
    workers = client.scheduler_info(n_workers=-1)["workers"]
    assert len(workers) == 2
    assert all(w["nthreads"] == 1 for w in workers.values())
    # This machine has no GPU, so no worker may advertise one.
    if not runtime.visible_gpus():
        assert all("GPU" not in (w.get("resources") or {}) for w in workers.values())
        assert runtime.cluster_has_gpus(client) is False


def test_workers_are_spawned_not_forked(client):
    infos = client.run(worker_info)
    assert len(infos) == 2
    assert {i["start_method"] for i in infos.values()} == {"spawn"}
    assert {i["nthreads"] for i in infos.values()} == {1}
    assert len({i["pid"] for i in infos.values()} | {os.getpid()}) == 3
    # The same, from inside a task.
    assert client.submit(worker_info, pure=False).result()["start_method"] == "spawn"


def _library_threads() -> int:
    import cv2

    return cv2.getNumThreads()


def test_workers_size_opencv_threads_to_their_own_thread_count(client):
    # One single-threaded worker per core must not each run OpenCV over every core.
    assert set(client.run(_library_threads).values()) == {1}
    assert client.submit(_library_threads, pure=False).result() == 1


def test_cap_library_threads_sets_opencv_and_an_imported_torch():
    import cv2
    import torch

    before = cv2.getNumThreads(), torch.get_num_threads()
    try:
        assert runtime.cap_library_threads(1) == {"opencv": 1, "torch": 1}
        assert cv2.getNumThreads() == 1 and torch.get_num_threads() == 1
    finally:
        cv2.setNumThreads(before[0])
        torch.set_num_threads(before[1])


def test_attach_by_scheduler_address(client):
    con = _quiet()
    other = make_client(ClusterOptions(scheduler=client.scheduler.address, dashboard=False), console=con)
    try:
        assert other.cluster is None
        assert len(other.scheduler_info(n_workers=-1)["workers"]) == 2
        assert other.submit(_double, 21).result() == 42
    finally:
        close_client(other)
    assert "attached to scheduler" in con.file.getvalue()
    # Closing the attached client leaves the cluster running.
    assert client.submit(_double, 2).result() == 4


def test_unreachable_scheduler_is_bad_input():
    with pytest.raises(BadInputError, match="cannot reach"):
        make_client(ClusterOptions(scheduler="tcp://127.0.0.1:9", connect_timeout="1s"), console=_quiet())


def test_cached_backend_builds_once_per_worker_process(client):
    results = client.gather(client.map(_use_cached, range(24), pure=False))
    by_pid: dict[int, set[str]] = {}
    for pid, token, calls in results:
        by_pid.setdefault(pid, set()).add(token)
        assert calls == 1
    assert all(len(tokens) == 1 for tokens in by_pid.values())
    assert os.getpid() not in by_pid


def test_cached_backend_single_build_under_threads():
    clear_cache()
    calls = []
    barrier = threading.Barrier(8)

    def factory():
        calls.append(1)
        return object()

    got = []

    def worker():
        barrier.wait()
        got.append(cached_backend("threads", factory))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert len({id(g) for g in got}) == 1
    assert clear_cache("threads") == 1
    cached_backend("threads", factory)
    assert len(calls) == 2
    clear_cache()


def test_failed_factory_is_retried():
    clear_cache()

    def boom():
        raise RuntimeError("no weights")

    with pytest.raises(RuntimeError):
        cached_backend("flaky", boom)
    assert cached_backend("flaky", lambda: 7) == 7
    clear_cache()


def test_cpu_cluster_drops_gpu_annotation(client):
    assert gpu_resources(client) is None
    with gpu_annotation(client) as active:
        assert active is False
        assert dask.get_annotations() == {}


def test_gpu_workers_get_gpu_resource(monkeypatch):
    monkeypatch.setattr(runtime, "visible_gpus", lambda: ["0", "1"])
    c = make_client(ClusterOptions(workers=2, dashboard=False), console=_quiet())
    try:
        workers = c.scheduler_info(n_workers=-1)["workers"].values()
        assert sorted(w["resources"].get("GPU", 0) for w in workers) == [1, 1]
        devices = {i["cuda_visible_devices"] for i in c.run(worker_info).values()}
        assert devices == {"0", "1"}
        assert gpu_resources(c) == {"GPU": 1}
        with gpu_annotation(c) as active:
            assert active is True
            assert dask.get_annotations() == {"resources": {"GPU": 1}}
        assert c.submit(_double, 5, resources=gpu_resources(c)).result() == 10
    finally:
        close_client(c)


def test_more_workers_than_gpus_hides_devices_from_the_rest(monkeypatch):
    monkeypatch.setattr(runtime, "visible_gpus", lambda: ["0"])
    shares = runtime._split_gpus(["0"], 3)
    assert shares == [["0"], [], []]
    assert runtime._split_gpus(["0", "1", "2"], 2) == [["0", "2"], ["1"]]


def test_slurm_job_script_without_sbatch(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch (nor anything else) on PATH
    opts = ClusterOptions(
        cluster="slurm",
        queue="gpuq",
        account="proj42",
        walltime="02:30:00",
        cores=8,
        memory="64GB",
        gpus=2,
        job_extra=["--constraint=a100"],
        start_method="forkserver",
        dry_run=True,
    )
    script = slurm_job_script(opts)
    assert script.startswith("#!")
    for line in (
        "#SBATCH -p gpuq",
        "#SBATCH -A proj42",
        "#SBATCH -t 02:30:00",
        "#SBATCH --gres=gpu:2",
        "#SBATCH --constraint=a100",
        "#SBATCH --cpus-per-task=8",
    ):
        assert line in script
    assert "dask_worker" in script
    assert "--resources GPU=2" in script
    assert "--nthreads 8" in script and "--nworkers" not in script  # one worker holds the GPUs
    assert "DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD=forkserver" in script
    assert "<scheduler-address>" in script
    # make_client refuses to submit while dry_run is set.
    with pytest.raises(BadInputError, match="dry_run"):
        make_client(opts, console=_quiet())


def test_slurm_cpu_jobs_run_one_process_per_core():
    script = slurm_job_script(ClusterOptions(cluster="slurm", cores=4))
    assert "--nworkers 4" in script
    assert "--nthreads 1" in script
    assert "--gres" not in script
    assert "--resources" not in script


def test_slurm_without_sbatch_is_bad_input(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BadInputError, match="sbatch"):
        make_client(ClusterOptions(cluster="slurm"), console=_quiet())


def test_cuda_cluster_without_dask_cuda(monkeypatch):
    monkeypatch.setitem(sys.modules, "dask_cuda", None)  # makes `import dask_cuda` fail
    with pytest.raises(BadInputError, match=r'pip install "inscene\[cuda\]"'):
        make_client(ClusterOptions(cluster="cuda"), console=_quiet())


def test_options_defaults_and_validation():
    opts = ClusterOptions()
    assert opts.cluster == "local" and opts.start_method == "spawn"
    assert opts.n_workers() == (os.cpu_count() or 1)
    assert all(f.description for f in ClusterOptions.model_fields.values())
    with pytest.raises(ValidationError):
        ClusterOptions(start_method="fork")
    with pytest.raises(ValidationError):
        ClusterOptions(workers=0)


def test_progress_is_one_line_when_not_a_tty():
    con = _quiet()
    assert list(progress(range(5), "counting", console=con)) == [0, 1, 2, 3, 4]
    out = con.file.getvalue()
    assert out.count("\n") == 1
    assert out.startswith("counting: 5/5 done in ")


def test_progress_over_futures_counts_failures(client):
    con = _quiet()
    futures = client.map(_double, range(4)) + [client.submit(_fail, 1)]
    done = list(progress(futures, "scoring", console=con))
    assert len(done) == 5
    assert sorted(f.result() for f in done if f.status == "finished") == [0, 2, 4, 6]
    line = con.file.getvalue().strip()
    assert line.startswith("scoring: 5/5 done") and line.endswith("(1 failed)")


def test_progress_draws_a_bar_on_a_terminal():
    buf = io.StringIO()
    con = Console(file=buf, force_terminal=True, width=100)
    assert list(progress(iter([1, 2, 3]), "bar", total=3, console=con)) == [1, 2, 3]
    assert "bar: 3/3 done" in buf.getvalue()


def test_dashboard_link_is_printed(monkeypatch):
    monkeypatch.setattr(runtime, "visible_gpus", lambda: [])
    con = _quiet()
    c = make_client(ClusterOptions(workers=1, dashboard=True), console=con)
    try:
        out = con.file.getvalue()
        assert "Dask: local cluster, 1 workers" in out
        assert "dashboard" in out
    finally:
        close_client(c)


def test_forkserver_start_method_is_honoured():
    # spawn is also distributed's default, so this checks that the option really reaches the
    # nannies.
    opts = ClusterOptions(workers=1, start_method="forkserver", dashboard=False)
    c = make_client(opts, console=_quiet())
    try:
        (info,) = c.run(worker_info).values()
        assert info["start_method"] == "forkserver"
    finally:
        close_client(c)


def _fake_slurm(folder):
    for name, body in (("sbatch", 'echo "Submitted batch job 4242"'), ("scancel", "true"), ("squeue", "true")):
        path = folder / name
        path.write_text(f"#!/bin/sh\n{body}\n")
        path.chmod(0o755)


@pytest.mark.parametrize("gpus, expected", [(1, {"GPU": 1}), (0, None)])
def test_queued_slurm_gpu_jobs_already_get_gpu_annotations(monkeypatch, tmp_path, gpus, expected):
    # Jobs are still queued (no worker has joined): GPU tasks submitted now must already ask for
    # the GPU resource, or one many-threaded GPU worker would later run several at once.
    _fake_slurm(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    c = make_client(ClusterOptions(cluster="slurm", gpus=gpus, cores=4, memory="8GB", dashboard=False),
                    console=_quiet())
    try:
        assert not c.scheduler_info(n_workers=-1)["workers"]
        assert gpu_resources(c) == expected
    finally:
        close_client(c)
