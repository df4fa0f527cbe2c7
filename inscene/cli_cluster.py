"""The cluster options every pipeline command shares, declared once.

``@with_cluster_options`` adds ``--cluster --scheduler --workers --queue --account --cores --memory
--gpus --walltime --jobs --dry-run`` (and ``--in-process``) to a Typer command and hands the command one
``ClusterOptions`` as its ``cluster_opts`` argument. Light on purpose: wings' CLIs import it
without importing ``inscene.cli``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any

import typer

_OPTIONS: list[tuple[str, Any, Any]] = [
    ("cluster", Annotated[str, typer.Option(
        "--cluster", help="Where to run: local (LocalCluster), slurm (dask-jobqueue), cuda (dask-cuda).")], "local"),
    ("scheduler", Annotated[str | None, typer.Option(
        "--scheduler", help="Attach to a running Dask scheduler at this address.")], None),
    ("workers", Annotated[int | None, typer.Option("--workers", help="Local worker processes (default: CPU cores).")],
     None),
    ("queue", Annotated[str | None, typer.Option("--queue", help="SLURM partition/queue.")], None),
    ("account", Annotated[str | None, typer.Option("--account", help="SLURM account.")], None),
    ("cores", Annotated[int, typer.Option("--cores", help="SLURM cores per job.")], 8),
    ("memory", Annotated[str, typer.Option("--memory", help="SLURM memory per job.")], "32GB"),
    ("gpus", Annotated[int, typer.Option(
        "--gpus", help="SLURM GPUs per job (adds --gres and the GPU worker resource).")], 0),
    ("walltime", Annotated[str, typer.Option("--walltime", help="SLURM walltime.")], "04:00:00"),
    ("jobs", Annotated[int, typer.Option("--jobs", help="SLURM jobs to start.")], 1),
    ("dry_run", Annotated[bool, typer.Option(
        "--dry-run", help="With --cluster slurm: print the job script and exit.")], False),
]
_NAMES = [name for name, _, _ in _OPTIONS]
_IN_PROCESS = Annotated[bool, typer.Option(
    "--in-process", help="Run the work in this process instead of on Dask workers (no cluster is started).")]


def cluster_options(**kw: Any):
    """A ``ClusterOptions`` from the CLI values (None means: the model's default)."""
    from pydantic import ValidationError

    from inscene.runtime import ClusterOptions

    try:
        return ClusterOptions(**{k: v for k, v in kw.items() if v is not None})
    except ValidationError as exc:  # one line naming the option, exit 2 (usage)
        err = exc.errors()[0]
        name = "--" + str(err["loc"][0]).replace("_", "-") if err.get("loc") else "a cluster option"
        raise typer.BadParameter(f"{name}: {err['msg']} (got {err.get('input')!r})") from None


def print_job_script_if_dry_run(opts: Any) -> bool:
    """With ``--dry-run``: print the SLURM job script and return True (the command then stops)."""
    if not opts.dry_run:
        return False
    if opts.cluster != "slurm":
        raise typer.BadParameter("--dry-run prints a SLURM job script: use it with --cluster slurm")
    from inscene.runtime import slurm_job_script

    typer.echo(slurm_job_script(opts))
    return True


def with_cluster_options(fn: Callable[..., Any] | None = None, /, **defaults: Any) -> Any:
    """Give a Typer command the shared cluster options; it receives them as ``cluster_opts``.

    Also ``--in-process``, which the command receives as ``in_process`` when it declares that
    parameter (as a plain ``in_process: bool = False``, like ``cluster_opts=None``).

    Use bare (``@with_cluster_options``) or with per-command defaults
    (``@with_cluster_options(memory="64GB", walltime="24:00:00")``).
    """
    unknown = set(defaults) - set(_NAMES)
    if unknown:
        raise TypeError(f"unknown cluster option(s): {sorted(unknown)}")

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(fn, eval_str=True)
        wants_in_process = "in_process" in sig.parameters
        own = [p for p in sig.parameters.values() if p.name not in ("cluster_opts", "in_process")]
        added = [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=defaults.get(name, default),
                              annotation=annotation)
            for name, annotation, default in _OPTIONS
        ]
        if wants_in_process:
            added.append(inspect.Parameter("in_process", inspect.Parameter.KEYWORD_ONLY, default=False,
                                           annotation=_IN_PROCESS))

        @functools.wraps(fn)
        def command(*args: Any, **kwargs: Any) -> Any:
            values = {name: kwargs.pop(name) for name in _NAMES if name in kwargs}
            return fn(*args, cluster_opts=cluster_options(**values), **kwargs)

        command.__signature__ = sig.replace(parameters=own + added)  # type: ignore[attr-defined]
        return command

    return decorate(fn) if fn is not None else decorate
