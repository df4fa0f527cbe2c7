"""The `inscene` command line (Typer). Each command is a thin call into a wing, imported lazily.

Exit codes: 0 success; 1 a run that finished with failures it reported; 2 bad usage or bad input.
Errors print as one line; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from inscene import __version__
from inscene.errors import InsceneError

app = typer.Typer(
    name="inscene",
    help="InScene: build the dataset, run the Face2Scene restorer, score methods (arXiv 2603.16570).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
weights_app = typer.Typer(
    help="Model weights: where each is looked for, what is found, prefetch.", no_args_is_help=True
)
app.add_typer(weights_app, name="weights")

out_console = Console()
err_console = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"inscene {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """InScene toolkit."""


# ---- options shared by every pipeline command (one definition, used by each) -------------------

ClusterKind = Annotated[
    str, typer.Option("--cluster", help="Where to run: local (LocalCluster), slurm (dask-jobqueue), cuda (dask-cuda).")
]
SchedulerOpt = Annotated[
    str | None, typer.Option("--scheduler", help="Attach to a running Dask scheduler at this address.")
]
WorkersOpt = Annotated[int | None, typer.Option("--workers", help="Local worker processes (default: CPU cores).")]
QueueOpt = Annotated[str | None, typer.Option("--queue", help="SLURM partition/queue.")]
AccountOpt = Annotated[str | None, typer.Option("--account", help="SLURM account.")]
CoresOpt = Annotated[int, typer.Option("--cores", help="SLURM cores per job.")]
MemoryOpt = Annotated[str, typer.Option("--memory", help="SLURM memory per job.")]
GpusOpt = Annotated[int, typer.Option("--gpus", help="SLURM GPUs per job (adds --gres and the GPU worker resource).")]
WalltimeOpt = Annotated[str, typer.Option("--walltime", help="SLURM walltime.")]
JobsOpt = Annotated[int, typer.Option("--jobs", help="SLURM jobs to start.")]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="With --cluster slurm: print the job script and exit.")]


def _cluster_options(**kw: object):
    from inscene.runtime import ClusterOptions

    return ClusterOptions(**{k: v for k, v in kw.items() if v is not None})


def _print_job_script_if_dry_run(opts) -> bool:
    if opts.dry_run:
        if opts.cluster != "slurm":
            raise typer.BadParameter("--dry-run prints a SLURM job script: use it with --cluster slurm")
        from inscene.runtime import slurm_job_script

        typer.echo(slurm_job_script(opts))
        return True
    return False


# ---- commands ------------------------------------------------------------------------------------


@app.command()
def demo(
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("demo-out"),
    cluster: ClusterKind = "local",
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    queue: QueueOpt = None,
    account: AccountOpt = None,
    cores: CoresOpt = 8,
    memory: MemoryOpt = "32GB",
    gpus: GpusOpt = 0,
    walltime: WalltimeOpt = "04:00:00",
    jobs: JobsOpt = 1,
    dry_run: DryRunOpt = False,
    in_process: Annotated[
        bool, typer.Option("--in-process", help="Run the stages in this process instead of on Dask workers.")
    ] = False,
) -> None:
    """Run the toolkit end to end, offline on CPU: real sample photos + generated images -> verified shards."""
    opts = _cluster_options(
        cluster=cluster, scheduler=scheduler, workers=workers, queue=queue, account=account, cores=cores,
        memory=memory, gpus=gpus, walltime=walltime, jobs=jobs, dry_run=dry_run,
    )
    if _print_job_script_if_dry_run(opts):
        return
    from pipelines.demo import run_demo

    result = run_demo(out, cluster=None if in_process else opts, console=out_console)
    if not result.ok:
        raise typer.Exit(1)


@app.command()
def schema(
    record: Annotated[
        str,
        typer.Argument(help="Record name (Sample, Face, Identity, Decision, DegradationParams, Provenance) or 'all'."),
    ] = "all",
) -> None:
    """Print the JSON Schema of the records."""
    from inscene.errors import BadInputError
    from inscene.schema import RECORDS, json_schema

    if record != "all" and record not in RECORDS:
        raise BadInputError(f"unknown record '{record}'; known: all, {', '.join(RECORDS)}")
    typer.echo(json.dumps(json_schema(record), indent=2))


@app.command()
def verify(
    root: Annotated[Path, typer.Argument(help="Dataset folder written by inscene (shards + manifests).")],
) -> None:
    """Recompute shard hashes; name every truncated, corrupt or missing shard (exit 1 if any)."""
    from inscene.errors import BadInputError
    from inscene.shards import format_report, verify_dataset

    if not root.is_dir():
        raise BadInputError(f"not a folder: {root}")
    report = verify_dataset(root)
    typer.echo(format_report(report))
    if not report.ok:
        raise typer.Exit(1)


@weights_app.command("status")
def weights_status() -> None:
    """Print found/missing for every model the toolkit can use, and where each was looked for."""
    from inscene.weights import format_status, status

    out_console.print(format_status(status()))


@weights_app.command("fetch")
def weights_fetch(
    names: Annotated[list[str], typer.Argument(help="Model names (see `inscene weights status`).")],
    dest: Annotated[Path | None, typer.Option("--dest", help="Folder (default: $INSCENE_HOME).")] = None,
) -> None:
    """Download weights on a machine with internet, to copy to offline nodes."""
    from inscene.weights import fetch

    for path in fetch(names, dest=dest):
        typer.echo(str(path))


from inscene.faces.cli import app as faces_app  # noqa: E402  (light: heavy imports live in the commands)

app.add_typer(faces_app, name="faces")

# @evaluate-commands (evaluate and leaderboard are defined above this line)

# @faces-commands (the faces sub-app is registered above this line)

@app.command()
def degrade(
    inp: Annotated[
        Path | None, typer.Argument(help="Dataset folder of shards, or a folder of images.")
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Output dataset folder (with --preview: the grid PNG).")] = Path(
        "degraded"
    ),
    versions: Annotated[int, typer.Option("--versions", help="LQ versions per image (val: 1, train: 5, §4.1).")] = 1,
    seed: Annotated[int, typer.Option("--seed", help="Seed; the same seed gives byte-identical shards.")] = 0,
    profile: Annotated[
        str, typer.Option("--profile", help="Random ranges: realesrgan (default) or s3diff.")
    ] = "realesrgan",
    preset: Annotated[
        str | None, typer.Option("--preset", help="A fixed operator d1..d4 (§7.4) instead of random draws.")
    ] = None,
    spatial_blur: Annotated[
        bool, typer.Option("--spatial-blur", help="Spatially varying first blur, stronger to the corners (§9.8).")
    ] = False,
    lq_size: Annotated[
        str, typer.Option("--lq-size", help="gt: LQ resized back to the HQ size (InScene); lq: kept at HQ/scale.")
    ] = "gt",
    split: Annotated[
        str | None, typer.Option("--split", help="Shard input: only this split. Image folder: split to write (val).")
    ] = None,
    subset: Annotated[
        str | None, typer.Option("--subset", help="Shard input: only this subset. Image folder: subset to write.")
    ] = None,
    partition_size: Annotated[int, typer.Option("--partition-size", help="Images per partition (= per shard).")] = 100,
    device: Annotated[str, typer.Option("--device", help="torch device for the degradations (cpu, cuda).")] = "cpu",
    preview: Annotated[
        Path | None, typer.Option("--preview", help="Render IMG under d1-d4 and random draws to --out (a PNG).")
    ] = None,
    draws: Annotated[int, typer.Option("--draws", help="Random draws in the --preview grid.")] = 4,
    cluster: ClusterKind = "local",
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    queue: QueueOpt = None,
    account: AccountOpt = None,
    cores: CoresOpt = 8,
    memory: MemoryOpt = "32GB",
    gpus: GpusOpt = 0,
    walltime: WalltimeOpt = "04:00:00",
    jobs: JobsOpt = 1,
    dry_run: DryRunOpt = False,
    in_process: Annotated[
        bool, typer.Option("--in-process", help="Run the stages in this process instead of on Dask workers.")
    ] = False,
) -> None:
    """Degrade clean images with replayable Real-ESRGAN operators into K-version LQ shards (§4.1)."""
    from inscene.errors import BadInputError

    if preview is not None:
        from pipelines.degrade import render_preview

        typer.echo(str(render_preview(preview, out, seed=seed, profile=profile, draws=draws,
                                      spatial_blur=spatial_blur)))
        return
    opts = _cluster_options(
        cluster=cluster, scheduler=scheduler, workers=workers, queue=queue, account=account, cores=cores,
        memory=memory, gpus=gpus, walltime=walltime, jobs=jobs, dry_run=dry_run,
    )
    if _print_job_script_if_dry_run(opts):
        return
    if inp is None:
        raise BadInputError("give an input folder (or --preview IMG)")
    from pipelines.degrade import DegradeOptions, run_degrade

    options = DegradeOptions(
        versions=versions, seed=seed, profile=profile, preset=preset, spatial_blur=spatial_blur,
        lq_size=lq_size, device=device,
    )
    result = run_degrade(
        inp, out, options, split=split, subset=subset, partition_size=partition_size,
        cluster=None if in_process else opts, console=out_console,
    )
    if not result.ok:
        raise typer.Exit(1)


# @degrade-commands (the degrade command is defined above this line)

# @filter-real-commands (filter-real is defined above this line)

@app.command("develop-raw")
def develop_raw(
    captures: Annotated[Path, typer.Argument(help="Identity folders of RAW captures: CAPTURES/<identity>/*.dng.")],
    refs: Annotated[Path, typer.Option("--refs", help="Identity folders of references: REFS/<identity>/*.jpg.")],
    out: Annotated[Path, typer.Option("--out", help="Output dataset folder (test split + identity shards).")] = Path(
        "inscene-test-real"
    ),
    groups: Annotated[
        Path | None, typer.Option("--groups", help="CSV (file,group) or YAML (file: group) tagging captures; "
                                  "default: ISO group from the metadata (§6.3).")
    ] = None,
    bits: Annotated[int, typer.Option("--bits", help="Bits per output sample: 8 or 16 (16 needs PNG).")] = 8,
    fmt: Annotated[str, typer.Option("--format", help="Output image: png (lossless) or jpeg.")] = "png",
    quality: Annotated[int, typer.Option("--quality", help="JPEG quality with --format jpeg.")] = 95,
    demosaic: Annotated[str, typer.Option("--demosaic", help="LibRaw demosaic: AHD (default), LINEAR, VNG, PPG, "
                                          "DCB, DHT, AAHD.")] = "AHD",
    gamma: Annotated[str, typer.Option("--gamma", help="Output curve 'power,slope' (default BT.709: 2.222,4.5).")] = (
        "2.222,4.5"
    ),
    auto_bright: Annotated[
        bool, typer.Option("--auto-bright/--no-auto-bright", help="LibRaw histogram auto-brightness.")
    ] = True,
    highlight: Annotated[str, typer.Option("--highlight", help="Highlights: clip, ignore, blend, reconstruct.")] = (
        "clip"
    ),
    camera_wb: Annotated[
        bool, typer.Option("--camera-wb/--daylight-wb", help="As-shot white balance (default) or daylight.")
    ] = True,
    baseline_exposure: Annotated[
        bool, typer.Option("--baseline-exposure", help="Apply each DNG's BaselineExposure (exposure shift).")
    ] = False,
    detector: Annotated[str | None, typer.Option("--detector", help="Face detector (default: dlib, "
                                                 "embedded; insightface, yolo-face).")] = None,
    partition_size: Annotated[int, typer.Option("--partition-size", help="Files per partition (= per shard).")] = 16,
    cluster: ClusterKind = "local",
    scheduler: SchedulerOpt = None,
    workers: WorkersOpt = None,
    queue: QueueOpt = None,
    account: AccountOpt = None,
    cores: CoresOpt = 8,
    memory: MemoryOpt = "32GB",
    gpus: GpusOpt = 0,
    walltime: WalltimeOpt = "04:00:00",
    jobs: JobsOpt = 1,
    dry_run: DryRunOpt = False,
    in_process: Annotated[
        bool, typer.Option("--in-process", help="Run the stages in this process instead of on Dask workers.")
    ] = False,
) -> None:
    """Develop phone RAW captures (incl. JPEG-XL DNG) + gallery references into the real test split (§6.3)."""
    from pydantic import ValidationError

    from inscene.config import InsceneConfig
    from inscene.errors import BadInputError

    opts = _cluster_options(
        cluster=cluster, scheduler=scheduler, workers=workers, queue=queue, account=account, cores=cores,
        memory=memory, gpus=gpus, walltime=walltime, jobs=jobs, dry_run=dry_run,
    )
    if _print_job_script_if_dry_run(opts):
        return
    try:
        power, slope = (float(v) for v in gamma.split(","))
    except ValueError:
        raise BadInputError(f"--gamma takes 'power,slope', e.g. 2.222,4.5; got {gamma!r}") from None
    try:
        config = InsceneConfig()
        for name, value in dict(
            output_bps=bits, output_format={"jpg": "jpeg"}.get(fmt.lower(), fmt.lower()), jpeg_quality=quality,
            demosaic=demosaic.upper(), gamma=(power, slope), auto_bright=auto_bright, highlight_mode=highlight.lower(),
            use_camera_wb=camera_wb, baseline_exposure=baseline_exposure,
        ).items():
            setattr(config.raw, name, value)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise BadInputError(f"invalid option {err['loc'][0]}: {err['msg']}") from None
    from pipelines.develop_raw import run_develop_raw

    result = run_develop_raw(
        captures, refs, out, config=config, groups=groups, detector=detector, partition_size=partition_size,
        cluster=None if in_process else opts, console=out_console,
    )
    if not result.ok:
        raise typer.Exit(1)


# @develop-raw-commands (develop-raw is defined above this line)

# @build-synthetic-commands (build-synthetic is defined above this line)

# @publish-commands (publish is defined above this line)

# @restorer-commands (restorer commands are defined above this line)

# @restore-command (the top-level restore command is defined above this line)


def main() -> None:
    """Console-script entry point: one-line errors with the right exit code."""
    debug = "--debug" in sys.argv[1:]
    try:
        app()
    except InsceneError as exc:
        if debug:
            raise
        err_console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err_console.print("interrupted", markup=False)
        sys.exit(130)
    except Exception as exc:  # an unexpected failure: still one line unless --debug
        if debug:
            raise
        err_console.print(
            f"error: {type(exc).__name__}: {exc} (run with --debug for the traceback)",
            markup=False, highlight=False, soft_wrap=True,
        )
        sys.exit(1)
