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
from inscene.cli_cluster import print_job_script_if_dry_run, with_cluster_options
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



# ---- commands ------------------------------------------------------------------------------------


@app.command()
@with_cluster_options
def demo(
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("demo-out"),
    cluster_opts=None,
    in_process: bool = False,
) -> None:
    """Run the toolkit end to end, offline on CPU: real sample photos + generated images -> verified shards."""
    opts = cluster_opts
    if print_job_script_if_dry_run(opts):
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

def _csv_list(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _key_values(items: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected KEY=VALUE, got {item!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out


@app.command()
@with_cluster_options
def evaluate(
    method: Annotated[
        str,
        typer.Option("--method", help="lq, bicubic, lanczos, face2scene; or your method's name with --predictions."),
    ],
    predictions: Annotated[
        Path | None, typer.Option("--predictions", help="Folder of your outputs, one image per sample key.")
    ] = None,
    split: Annotated[
        str | None,
        typer.Option("--split", help="With --data: val-synthetic (default), val-real, test-real or any shard split "
                     "folder. With --lq/--gt: the row label (default: folders-<GT folder>-<hash>, "
                     "printed; not an InScene split name)."),
    ] = None,
    data: Annotated[Path | None, typer.Option("--data", help="InScene dataset folder (shards).")] = None,
    lq: Annotated[Path | None, typer.Option("--lq", help="Plain folder of degraded inputs (not with --data).")] = None,
    gt: Annotated[Path | None, typer.Option("--gt", help="Plain folder of ground truths (not with --data).")] = None,
    face_only: Annotated[
        bool, typer.Option("--face-only", help="Score the face box crops (Table 3 'Face only'; no LIQE).")
    ] = False,
    gt_face_inserted: Annotated[
        bool, typer.Option("--gt-face-inserted", help="Composite the GT face in before scoring (Table 3).")
    ] = False,
    full: Annotated[
        bool | None, typer.Option("--full/--no-full", help="Also score whole images (default: unless a variant flag).")
    ] = None,
    metrics: Annotated[
        str | None, typer.Option("--metrics", help="Comma-separated metric names (default: the paper's ten, ID, PIQE).")
    ] = None,
    results: Annotated[Path, typer.Option("--results", help="Rows and score cache folder.")] = Path("inscene-results"),
    lq_field: Annotated[
        str | None, typer.Option("--lq-field", help="LQ member name in the shards (default: lq0.png, then lq.png).")
    ] = None,
    gt_field: Annotated[
        str | None, typer.Option("--gt-field", help="GT member name in the shards (default: hq.*, then gt.*).")
    ] = None,
    shard_split: Annotated[
        str | None, typer.Option("--shard-split", help="Shard folder to read (default: found from --split).")
    ] = None,
    subset: Annotated[str | None, typer.Option("--subset", help="Only shards of this subset.")] = None,
    scale: Annotated[
        float | None, typer.Option("--scale", help="lq/bicubic/lanczos: resize by this factor (splits without GT).")
    ] = None,
    device: Annotated[str | None, typer.Option("--device", help="Device of learned metrics (default: cuda)")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per forward pass.")] = 8,
    partition_size: Annotated[int, typer.Option("--partition-size", help="Samples per Dask task.")] = 16,
    random_init: Annotated[
        bool, typer.Option("--random-init", help="Learned metrics with random weights (plumbing checks only).")
    ] = False,
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="face2scene: the trained restorer (`inscene train restorer`).")
    ] = None,
    method_opt: Annotated[
        list[str] | None,
        typer.Option("--method-opt", help="Method option KEY=VALUE, repeatable (face2scene: refs, ref_fr, base, "
                     "detector, device, dtype, cfg)."),
    ] = None,
    cluster_opts=None,
    in_process: bool = False,
) -> None:
    """Score a method on an InScene split (or folder pair) as the paper does; exit 1 if the row is incomplete."""
    opts = cluster_opts
    if print_job_script_if_dry_run(opts):
        return
    from benchmarks.commands import print_report, run_evaluate

    variants = [v for v, on in (("face-only", face_only), ("gt-face-inserted", gt_face_inserted)) if on]
    if full or (full is None and not variants):
        variants.insert(0, "full")
    if not variants:
        raise typer.BadParameter("--no-full needs --face-only or --gt-face-inserted")
    report = run_evaluate(
        method, predictions=predictions, split=split, data=data, lq=lq, gt=gt, shard_split=shard_split,
        subset=subset, lq_field=lq_field, gt_field=gt_field, metrics=_csv_list(metrics), variants=variants,
        results=results, scale=scale, pretrained=not random_init, device=device, batch_size=batch_size,
        partition_size=partition_size, cluster=None if in_process else opts, console=err_console,
        method_opts={**_key_values(method_opt), **({"checkpoint": str(checkpoint)} if checkpoint else {})},
    )
    print_report(report, out_console)
    for row in report.rows:
        typer.echo(row.status_line())
    for path, gone in report.dropped.items():
        err_console.print(f"warning: {path} had {', '.join(gone)}, which this run's --metrics dropped (row replaced)",
                          markup=False, highlight=False, soft_wrap=True)
    if not report.complete:
        raise typer.Exit(1)


@app.command()
def leaderboard(
    results: Annotated[Path, typer.Option("--results", help="Folder `inscene evaluate` wrote.")] = Path(
        "inscene-results"
    ),
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default: RESULTS/leaderboard; "
                                                  "with --split: RESULTS/leaderboard/<split>[+<split>...]).")] = None,
    split: Annotated[
        list[str] | None, typer.Option("--split", help="Only this split (repeatable; default: all).")
    ] = None,
    wins_ref: Annotated[
        str, typer.Option("--wins-ref", help="Method the Wins column compares against ('' for none).")
    ] = "bicubic",
    reported: Annotated[
        bool, typer.Option("--reported/--no-reported", help="Show the paper's published rows (Tables 2, 3, 4, 7).")
    ] = True,
    rank_scope: Annotated[
        str, typer.Option("--rank-scope", help="Mark best/second within each 'source' (measured, reported; "
                          "default) or over 'all' rows together.")
    ] = "source",
) -> None:
    """Aggregate evaluated rows beside the paper's into Markdown, CSV, HTML and PNG; exit 1 if a row is incomplete."""
    from benchmarks.commands import run_leaderboard

    files = run_leaderboard(
        results, out, splits=split or None, wins_ref=wins_ref or None, include_reported=reported,
        rank_scope=rank_scope,
    )
    out_console.print(files.text, markup=False, highlight=False, soft_wrap=True)
    for path in (files.markdown, files.csv, files.html, *files.plots.values()):
        err_console.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)
    if files.incomplete:
        err_console.print(
            f"incomplete rows: {', '.join(files.incomplete)}", markup=False, highlight=False, soft_wrap=True
        )
        raise typer.Exit(1)


# @evaluate-commands (evaluate and leaderboard are defined above this line)

# @faces-commands (the faces sub-app is registered above this line)

@app.command()
@with_cluster_options
def degrade(
    inp: Annotated[
        Path | None, typer.Argument(help="Dataset folder of shards, or a folder of images.")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Output dataset folder (default: degraded). With --preview: the grid image "
                     "(default: <IMG stem>-preview.png here)."),
    ] = None,
    versions: Annotated[
        int | None,
        typer.Option("--versions", help="LQ versions per image (default, §4.1: 5 for a train split, 1 otherwise)."),
    ] = None,
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
        Path | None,
        typer.Option("--preview", help="Render IMG under d1-d4 and random draws to --out (an image file; "
                     "default: <IMG stem>-preview.png)."),
    ] = None,
    draws: Annotated[int, typer.Option("--draws", help="Random draws in the --preview grid.")] = 4,
    cluster_opts=None,
    in_process: bool = False,
) -> None:
    """Degrade clean images with replayable Real-ESRGAN operators into K-version LQ shards (§4.1)."""
    from inscene.errors import BadInputError

    if preview is not None:
        from pipelines.degrade import render_preview

        typer.echo(str(render_preview(preview, out, seed=seed, profile=profile, draws=draws,
                                      spatial_blur=spatial_blur)))
        return
    opts = cluster_opts
    if print_job_script_if_dry_run(opts):
        return
    if inp is None:
        raise BadInputError("give an input folder (or --preview IMG)")
    from pipelines.degrade import DegradeOptions, run_degrade

    options = DegradeOptions(
        versions=versions, seed=seed, profile=profile, preset=preset, spatial_blur=spatial_blur,
        lq_size=lq_size, device=device,
    )
    result = run_degrade(
        inp, out if out is not None else Path("degraded"), options, split=split, subset=subset,
        partition_size=partition_size,
        cluster=None if in_process else opts, console=out_console,
    )
    if not result.ok:
        raise typer.Exit(1)


# @degrade-commands (the degrade command is defined above this line)

@app.command("filter-real")
@with_cluster_options
def filter_real(
    inputs: Annotated[
        list[str] | None,
        typer.Argument(help="Folders, globs, fsspec URLs, list files (.txt/.csv), WebDataset/img2dataset tars."),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder (shards, decision logs, report).")] = Path(
        "filtered"
    ),
    profile: Annotated[
        str, typer.Option("--profile", help="gallery (§6.2: short side >= 1000) or cc12m (§4.1: >= 1024).")
    ] = "gallery",
    refs: Annotated[
        Path | None,
        typer.Option("--refs", help="Identity references REFS/<identity>/*.jpg, matched by folder name to gallery "
                                    "inputs INPUT/<identity>/*.jpg (--profile gallery)."),
    ] = None,
    pseudonymise: Annotated[
        bool, typer.Option("--pseudonymise", help="HMAC-SHA256 pseudonyms for identities, keys and sources.")
    ] = False,
    salt_file: Annotated[
        Path | None,
        typer.Option("--salt-file", help="Secret salt for --pseudonymise (else $INSCENE_PSEUDONYM_SALT)."),
    ] = None,
    rethreshold: Annotated[
        Path | None,
        typer.Option("--rethreshold", help="Re-apply thresholds to this decision log (a first run's folder)."),
    ] = None,
    min_side: Annotated[int | None, typer.Option("--min-side", help="Shorter side at least (px).")] = None,
    min_face_area: Annotated[
        float | None, typer.Option("--min-face-area", help="Face box / crop area at least (0.01 = 1%).")
    ] = None,
    min_blur_face: Annotated[
        float | None, typer.Option("--min-blur-face", help="Laplacian variance of the face at least.")
    ] = None,
    min_blur_image: Annotated[
        float | None, typer.Option("--min-blur-image", help="Laplacian variance of the crop at least.")
    ] = None,
    min_musiq: Annotated[float | None, typer.Option("--min-musiq", help="MUSIQ at least (65).")] = None,
    min_clipiqa: Annotated[float | None, typer.Option("--min-clipiqa", help="CLIP-IQA at least (0.65).")] = None,
    min_maniqa: Annotated[float | None, typer.Option("--min-maniqa", help="MANIQA at least (0.40).")] = None,
    max_piqe: Annotated[
        float | None, typer.Option("--max-piqe", help="PIQE at most (embedded fallback Stage 3).")
    ] = None,
    face: Annotated[
        str | None, typer.Option("--face", help="Face to crop around: largest (default) or score.")
    ] = None,
    detector: Annotated[
        str, typer.Option("--detector", help="auto (yolo-face if its weights are found, else dlib), dlib, ...")
    ] = "auto",
    iqa: Annotated[
        str, typer.Option("--iqa", help="Stage 3: auto, paper (MUSIQ/CLIP-IQA/MANIQA) or piqe (embedded).")
    ] = "auto",
    measure_all: Annotated[
        bool, typer.Option("--measure-all", help="Score Stage 3 even for Stage 2 rejects (for --rethreshold).")
    ] = False,
    split: Annotated[str, typer.Option("--split", help="Split of the output shards.")] = "train",
    subset: Annotated[
        str | None, typer.Option("--subset", help="Subset (default: real for gallery, nonref for cc12m).")
    ] = None,
    image_format: Annotated[str, typer.Option("--image-format", help="png (lossless) or jpeg.")] = "png",
    partition_size: Annotated[
        int, typer.Option("--partition-size", help="Images per partition (one shard and one log each).")
    ] = 500,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Stage 3 IQA batch size.")] = 8,
    device: Annotated[str | None, typer.Option("--device", help="torch device for IQA (default: cuda if any).")] = None,
    cluster_opts=None,
    in_process: bool = False,
) -> None:
    """Filter real gallery / CC12M photos (§6.2, §4.1): size+face, content, quality -> 1024² shards + report."""
    from inscene.errors import BadInputError

    overrides = {
        "min_short_side": min_side, "min_face_area_fraction": min_face_area, "min_blur_face": min_blur_face,
        "min_blur_image": min_blur_image, "min_musiq": min_musiq, "min_clipiqa": min_clipiqa,
        "min_maniqa": min_maniqa, "max_piqe": max_piqe,
    }
    salt = None
    if pseudonymise or salt_file is not None:
        from pipelines.inputs import load_salt

        salt = load_salt(salt_file)
        if salt_file is not None and out.resolve() in (salt_file.resolve(), *salt_file.resolve().parents):
            raise BadInputError("keep the salt file outside the output folder")
    if rethreshold is not None:
        from pipelines.filter_real import run_rethreshold

        result = run_rethreshold(rethreshold, out, overrides, inputs=inputs or None, salt=salt, console=err_console)
    else:
        opts = cluster_opts
        if print_job_script_if_dry_run(opts):
            return
        if not inputs:
            raise BadInputError("give at least one INPUT (or --rethreshold LOG)")
        from pipelines.filter_real import FilterOptions, Thresholds, run_filter_real

        options = FilterOptions(
            profile=profile, split=split, subset=subset, detector=detector, iqa=iqa, device=device,
            image_format=image_format, partition_size=partition_size, batch_size=batch_size,
            measure_all=measure_all, pseudonymise=pseudonymise, face_select=face,
            thresholds=Thresholds.for_profile(profile, **overrides) if profile in ("gallery", "cc12m") else None,
        )
        result = run_filter_real(
            inputs, out, options, refs=refs, salt=salt, cluster=None if in_process else opts, console=err_console
        )
    f = result.funnel
    out_console.print(
        f"filter-real: {f['input']} inputs -> decoded {f['decoded']} -> stage 1 {f['stage1']} -> stage 2 "
        f"{f['stage2']} -> stage 3 {f['stage3']} -> written {f['written']} (IQA: {result.iqa}, detector: "
        f"{result.detector}); report: {result.report['markdown']}",
        markup=False, highlight=False, soft_wrap=True,
    )
    if not result.ok:
        err_console.print(f"{result.summary.errors} item(s) failed with unexpected errors (see the decision log)")
        raise typer.Exit(1)


# @filter-real-commands (filter-real is defined above this line)

@app.command("develop-raw")
@with_cluster_options
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
    pseudonymise: Annotated[
        bool, typer.Option("--pseudonymise", help="HMAC-SHA256 pseudonyms for identities, keys and sources "
                           "(as filter-real; needed to publish).")
    ] = False,
    salt_file: Annotated[
        Path | None,
        typer.Option("--salt-file", help="Secret salt for --pseudonymise (else $INSCENE_PSEUDONYM_SALT)."),
    ] = None,
    cluster_opts=None,
    in_process: bool = False,
) -> None:
    """Develop phone RAW captures (incl. JPEG-XL DNG) + gallery references into the real test split (§6.3)."""
    from pydantic import ValidationError

    from inscene.config import InsceneConfig
    from inscene.errors import BadInputError

    opts = cluster_opts
    if print_job_script_if_dry_run(opts):
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
    salt = None
    if pseudonymise or salt_file is not None:
        from pipelines.inputs import load_salt

        salt = load_salt(salt_file)
        if salt_file is not None and out.resolve() in (salt_file.resolve(), *salt_file.resolve().parents):
            raise BadInputError("keep the salt file outside the output folder")
    from pipelines.develop_raw import run_develop_raw

    result = run_develop_raw(
        captures, refs, out, config=config, groups=groups, detector=detector, partition_size=partition_size,
        cluster=None if in_process else opts, console=out_console, pseudonymise=pseudonymise, salt=salt,
    )
    if not result.ok:
        raise typer.Exit(1)


# @develop-raw-commands (develop-raw is defined above this line)

@app.command("build-synthetic")
@with_cluster_options(memory="64GB", walltime="24:00:00")
def build_synthetic(
    identities: Annotated[
        Path, typer.Option("--identities", help="ROOT/<identity>/*.{jpg,png} reference faces (CelebRef-HQ layout).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder (rerun the same command to resume).")],
    per_identity: Annotated[
        int | None, typer.Option("--per-identity", help="Accepted scenes per identity (default 12, paper silent).")
    ] = None,
    max_attempts: Annotated[
        int | None, typer.Option("--max-attempts", help="Generations tried per identity at most (default 40).")
    ] = None,
    val_identities: Annotated[
        int | None, typer.Option("--val-identities", help="Identities held out for validation (§6.1: 100).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the split, prompts, references and generations.")] = 0,
    generator: Annotated[
        str,
        typer.Option("--generator", help="infiniteyou (paper), infiniteyou-tiny (smoke test) or compose (offline)."),
    ] = "infiniteyou",
    stage: Annotated[
        str | None, typer.Option("--stage", help="InfiniteYou weights: sim_stage1 (§6.1) or aes_stage2.")
    ] = None,
    steps: Annotated[int | None, typer.Option("--steps", help="Denoising steps (InfiniteYou: 30).")] = None,
    guidance: Annotated[float | None, typer.Option("--guidance", help="FLUX guidance (InfiniteYou: 3.5).")] = None,
    resolution: Annotated[
        str | None, typer.Option("--resolution", help="WIDTHxHEIGHT (InfiniteYou: 864x1152; multiples of 16).")
    ] = None,
    dtype: Annotated[str | None, typer.Option("--dtype", help="auto, bfloat16, float16 or float32.")] = None,
    device: Annotated[str | None, typer.Option("--device", help="auto, cuda, cuda:N or cpu.")] = None,
    cpu_offload: Annotated[
        bool, typer.Option("--cpu-offload", help="diffusers model CPU offload (less GPU memory, slower).")
    ] = False,
    lora: Annotated[
        list[str] | None,
        typer.Option("--lora", help="NAME_OR_FILE[:SCALE], repeatable (default: antiblur-lora:1.0, §6.1)."),
    ] = None,
    no_lora: Annotated[bool, typer.Option("--no-lora", help="Generate without any LoRA.")] = False,
    flux: Annotated[Path | None, typer.Option("--flux", help="FLUX.1-dev diffusers folder.")] = None,
    infiniteyou: Annotated[
        Path | None, typer.Option("--infiniteyou", help="InfiniteYou snapshot (or its stage folder).")
    ] = None,
    arcface_weights: Annotated[
        Path | None, typer.Option("--arcface-weights", help="facexlib recognition_arcface_ir_se50.pth.")
    ] = None,
    antelopev2: Annotated[Path | None, typer.Option("--antelopev2", help="antelopev2 insightface pack folder.")] = None,
    id_detector: Annotated[
        str | None, typer.Option("--id-detector", help="Reference-face detector of InfiniteYou (insightface; dlib).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", help="Images per generator call.")] = 1,
    embedder: Annotated[
        str,
        typer.Option("--embedder", help="Identity filter: arcface (§6.1, >= 0.55) or dlib (embedded, own threshold)."),
    ] = "arcface",
    detector: Annotated[
        str | None,
        typer.Option("--detector", help="Filter's face detector (default: insightface for arcface, dlib for dlib)."),
    ] = None,
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="Keep threshold (default: the embedder's; ArcFace 0.55).")
    ] = None,
    score: Annotated[
        str,
        typer.Option("--score", help="Similarity the threshold applies to: used (reference generated from) or mean."),
    ] = "used",
    prompts: Annotated[
        Path | None, typer.Option("--prompts", help="JSONL of prompts ({\"prompt\", \"tags\", \"identity\"}).")
    ] = None,
    identities_per_partition: Annotated[
        int | None, typer.Option("--identities-per-partition", help="Identities per Dask task and per shard (4).")
    ] = None,
    tagger: Annotated[
        str, typer.Option("--tagger", help="Diversity-report tags: prompt (offline) or clip (clip-vit-large-patch14).")
    ] = "prompt",
    retry_failed: Annotated[
        bool, typer.Option("--retry-failed", help="Rerun partitions whose identities ran out of memory or crashed.")
    ] = False,
    clean_work: Annotated[
        bool, typer.Option("--clean-work", help="Delete journals of partitions that finished without failures.")
    ] = False,
    cluster_opts=None,
    in_process: bool = False,
) -> None:
    """Generate identity scenes (InfiniteYou on FLUX.1-dev), ArcFace-filter them, write train/val shards (§6.1)."""
    opts = cluster_opts
    if print_job_script_if_dry_run(opts):
        return
    from pipelines.build_synthetic import SyntheticOptions, generator_options, run_build_synthetic

    gen_opts = generator_options(
        generator, stage=stage, steps=steps, guidance=guidance, resolution=resolution, dtype=dtype, device=device,
        cpu_offload=cpu_offload, lora=lora, no_lora=no_lora, flux=flux, infiniteyou=infiniteyou,
        arcface_weights=arcface_weights, antelopev2=antelopev2, id_detector=id_detector,
    )
    given = {"per_identity": per_identity, "max_attempts": max_attempts, "val_identities": val_identities,
             "identities_per_partition": identities_per_partition}
    options = SyntheticOptions(
        seed=seed, generator=generator, generator_options=gen_opts, embedder=embedder, detector=detector,
        threshold=threshold, score=score, batch_size=batch_size, prompts_file=str(prompts) if prompts else None,
        **{k: v for k, v in given.items() if v is not None},
    )
    result = run_build_synthetic(
        identities, out, options, cluster=None if in_process else opts, console=out_console,
        retry_failed=retry_failed, clean_work=clean_work, tagger=tagger,
    )
    if not result.ok:
        raise typer.Exit(1)


# @build-synthetic-commands (build-synthetic is defined above this line)

@app.command()
def publish(
    dirs: Annotated[
        list[Path], typer.Argument(help="Dataset folders (build-synthetic, filter-real, develop-raw, degrade output).")
    ],
    repo_id: Annotated[str, typer.Option("--repo-id", help="Hub dataset repo, ORG/NAME.")],
    private: Annotated[
        bool, typer.Option("--private", help="Create the repo private; refuse to upload into an existing public one.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Build and validate the repo folder offline; upload nothing.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder the repo is assembled in (default: publish-NAME).")
    ] = None,
    declaration: Annotated[
        Path | None,
        typer.Option("--declaration", help="Licence/consent/pseudonymisation declaration (default: DIR/inscene.json)."),
    ] = None,
    mapping: Annotated[
        list[str] | None,
        typer.Option("--map", help="Publish shards SPLIT/SUBSET as CONFIG/SPLIT, e.g. test/real=test-real/test; "
                     "DIR:SPLIT/SUBSET=... for input folder DIR only; =- leaves them out, e.g. "
                     "out/dataset:val/synthetic=- to publish out/val-lq's degraded val instead."),
    ] = None,
    check: Annotated[
        str, typer.Option("--check", help="Validation: auto, full (Arrow cache in a temp dir) or stream.")
    ] = "auto",
) -> None:
    """Publish InScene to the Hugging Face Hub: card, configs per subset/split, privacy gate, resumable upload."""
    from inscene.hub import publish as run_publish
    from inscene.hub import summary_table

    result = run_publish(
        dirs, repo_id, out=out, private=private, dry_run=dry_run, declaration=declaration, mapping=mapping,
        check=check, console=err_console,
    )
    out_console.print(summary_table(result, repo_id, dry_run))
    staged = result.staged
    if result.reused:
        typer.echo(f"reused the staged folder {staged.out} (inputs unchanged)")
    if result.undocumented:
        err_console.print(
            f"warning: undocumented metadata columns on the card: {', '.join(result.undocumented)} "
            "(describe them under 'columns' in inscene.json)", markup=False, highlight=False,
        )
    mode = result.validation.mode
    if dry_run:
        typer.echo(f"dry run: {staged.out} loads with HF datasets ({mode} check of every config and split); "
                   "nothing was uploaded")
    else:
        typer.echo(f"published https://huggingface.co/datasets/{repo_id} ({len(result.uploaded)} upload steps)")


# @publish-commands (publish is defined above this line)

from restorer.cli import analyze_app, restorer_app, train_app  # noqa: E402  (light: heavy imports in the commands)

app.add_typer(restorer_app, name="restorer")
app.add_typer(train_app, name="train")
app.add_typer(analyze_app, name="analyze")

# @restorer-commands (restorer commands are defined above this line)

@app.command()
def restore(
    source: Annotated[Path, typer.Argument(help="Image, folder of images, or dataset folder (with --split).")],
    checkpoint: Annotated[
        Path, typer.Option("--checkpoint", help="Trained restorer (.safetensors, or a `train restorer` run folder).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Output folder (or an image path for one input).")] = Path(
        "restored"
    ),
    refs: Annotated[
        Path | None, typer.Option("--refs", help="Reference photos: a folder, or one sub-folder per identity_id.")
    ] = None,
    identity: Annotated[str | None, typer.Option("--identity", help="Sub-folder of --refs for image inputs.")] = None,
    split: Annotated[str | None, typer.Option("--split", help="Dataset inputs: the shard split folder.")] = None,
    ref_fr: Annotated[
        str, typer.Option("--ref-fr", help="Stage I Ref-FR: faceme (paper; needs --refs), gt (dataset inputs: the "
                          "sample's hq.* as x_HQ), passthrough.")
    ] = "faceme",
    ref_fr_path: Annotated[Path | None, typer.Option("--ref-fr-path", help="FaceMe checkout.")] = None,
    base: Annotated[
        str | None, typer.Option("--base", help="SD-Turbo folder (default: the checkpoint's, else inscene weights).")
    ] = None,
    detector: Annotated[str | None, typer.Option("--detector", help="Face detector (default: faces.detector).")] = None,
    cfg: Annotated[float | None, typer.Option("--cfg", help="CFG scale (default: the checkpoint's, 1.10).")] = None,
    scale: Annotated[float, typer.Option("--scale", help="Output size = input size x scale.")] = 1.0,
    device: Annotated[str, typer.Option("--device", help="auto, cpu, cuda, cuda:N.")] = "auto",
    dtype: Annotated[str, typer.Option("--dtype", help="auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, fp16.")] = "auto",
) -> None:
    """Restore degraded scenes with a trained Face2Scene checkpoint; writes images and restore.json."""
    from restorer.restore import run_restore

    report = run_restore(
        source, out, checkpoint, refs=refs, identity=identity, split=split, base=base, ref_fr=ref_fr,
        ref_fr_path=ref_fr_path, detector=detector, cfg_scale=cfg, device=device, dtype=dtype, scale=scale,
        console=err_console,
    )
    if report.failed:
        raise typer.Exit(1)


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
