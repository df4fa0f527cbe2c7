"""filter-real fixes: --rethreshold from another working directory, decode details in the log.

The photos are scikit-image's astronaut (real, with a face); the crop is 512 px and the minimum
shorter side 256 px, as in tests/test_filter_real.py (the shipped photos are below §6.2's 1000 px).
"""

from __future__ import annotations

import dataclasses
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skimage.data

from inscene import imageio
from inscene.config import InsceneConfig
from pipelines.filter_real import FilterOptions, Thresholds, run_filter_real, run_rethreshold
from pipelines.report import rejections, write_report

CROP = 512
MIN_SIDE = 256


def _config() -> InsceneConfig:
    return InsceneConfig(real_filter={"crop_size": CROP})


def _options(**thresholds) -> FilterOptions:
    return FilterOptions(thresholds=Thresholds.for_profile("gallery", min_short_side=MIN_SIDE, **thresholds),
                         detector="dlib", iqa="piqe", partition_size=2)


def _tar(path: Path, images: list[bytes]) -> None:
    """An img2dataset-style WebDataset tar: ``{key}.jpg`` + ``{key}.txt``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w") as tf:
        for i, data in enumerate(images):
            for name, blob in ((f"{i:09d}.jpg", data), (f"{i:09d}.txt", f"photo {i}".encode())):
                info = tarfile.TarInfo(name)
                info.size = len(blob)
                tf.addfile(info, io.BytesIO(blob))


def _first_run_with_relative_sources(tmp_path: Path, monkeypatch) -> Path:
    """A first run started in ``tmp_path/start`` with relative inputs; Stage 3 rejects everything
    (PIQE <= 1), so a looser --rethreshold must re-make every sample from its source."""
    start = tmp_path / "start"
    astro = skimage.data.astronaut()
    for rel, rgb in {"fr-in/astronaut.png": astro, "fr-in/astronaut-flipped.png": astro[:, ::-1]}.items():
        (start / rel).parent.mkdir(parents=True, exist_ok=True)
        (start / rel).write_bytes(imageio.encode_image(np.ascontiguousarray(rgb), "png"))
    jpg = imageio.encode_image(astro, "jpeg", quality=95)
    _tar(start / "cc" / "00000.tar", [jpg])
    _tar(start / "cc" / "00001.tar", [jpg])
    monkeypatch.chdir(start)
    res = run_filter_real(["fr-in", "cc"], tmp_path / "first", _options(max_piqe=1.0), config=_config())
    d = res.summary.decisions
    assert res.summary.accepted == 0 and set(d["stage"]) == {"quality"}
    assert set(d["source"]) == {"fr-in/astronaut.png", "fr-in/astronaut-flipped.png",
                                "cc/00000.tar#000000000.jpg", "cc/00001.tar#000000000.jpg"}  # logged relative
    return start


def test_rethreshold_from_another_working_directory_remakes_samples_from_relative_sources(tmp_path, monkeypatch):
    start = _first_run_with_relative_sources(tmp_path, monkeypatch)
    assert json.loads((tmp_path / "first" / "run.json").read_text())["cwd"] == str(start)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    re = run_rethreshold(tmp_path / "first", tmp_path / "re", {"max_piqe": 100.0})
    d = re.summary.decisions.set_index("source")
    assert d["accepted"].astype(bool).all(), d[["stage", "reason"]]
    assert re.summary.accepted == 4 and re.summary.errors == 0
    with tarfile.open(next((tmp_path / "re" / "dataset").rglob("*.tar"))) as tf:
        meta = json.loads(tf.extractfile(next(m for m in tf.getmembers() if m.name.endswith(".json"))).read())
    assert not Path(meta["source"]).is_absolute()  # the samples record the source as the first run logged it


def test_rethreshold_turns_each_vanished_source_into_one_rejected_row(tmp_path, monkeypatch):
    start = _first_run_with_relative_sources(tmp_path, monkeypatch)
    (start / "cc" / "00001.tar").unlink()
    (start / "fr-in" / "astronaut-flipped.png").unlink()
    monkeypatch.chdir(tmp_path)
    re = run_rethreshold(tmp_path / "first", tmp_path / "re", {"max_piqe": 100.0})  # the run goes on
    d = re.summary.decisions.set_index("source")
    gone = ["cc/00001.tar#000000000.jpg", "fr-in/astronaut-flipped.png"]
    for source in gone:
        assert (d.loc[source, "stage"], d.loc[source, "reason"]) == ("decode", "rethreshold: unreadable")
    assert "input not found" in d.loc[gone[0], "m.decode_detail"]
    assert d.loc[gone[1], "m.decode_detail"].startswith("FileNotFoundError")
    assert set(d.index[d["accepted"].astype(bool)]) == {"fr-in/astronaut.png", "cc/00000.tar#000000000.jpg"}
    assert re.summary.errors == 0


def test_decode_rejections_keep_their_detail_beside_the_short_reason(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    good = imageio.encode_image(skimage.data.astronaut(), "jpeg", quality=90)
    (folder / "locked.jpg").write_bytes(good)
    (folder / "truncated.jpg").write_bytes(good[:3000])
    real_read = Path.read_bytes

    def read_bytes(self):  # tests run as root, where chmod 000 does not stop a read
        if self.name == "locked.jpg":
            raise PermissionError(13, "Permission denied", str(self))
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    listing = tmp_path / "list.txt"
    listing.write_text("in/missing.jpg\nmemory://inscene-fixes/nope.jpg\n")
    res = run_filter_real([folder, listing], tmp_path / "out", _options(), config=_config())
    d = res.summary.decisions.set_index("key")
    expect = {"locked": "PermissionError", "in_missing": "FileNotFoundError", "inscene-fixes_nope": "FileNotFoundError"}
    for key, kind in expect.items():
        assert (d.loc[key, "stage"], d.loc[key, "reason"]) == ("decode", "unreadable"), key  # groups as before
        assert d.loc[key, "m.decode_detail"].startswith(kind), (key, d.loc[key, "m.decode_detail"])
    assert "missing.jpg" in d.loc["in_missing", "m.decode_detail"]
    assert d.loc["truncated", "reason"] == "truncated" and d.loc["truncated", "m.decode_detail"]
    stored = pd.read_parquet(res.out / "decisions").set_index("key")
    assert stored.loc["locked", "m.decode_detail"].startswith("PermissionError")
    report = (res.out / "report.md").read_text()
    assert "| decode | unreadable | 3 |" in report and "example detail" in report


def test_decode_detail_of_a_pseudonymised_run_names_no_path(tmp_path):
    root = tmp_path / "gallery"
    (root / "Jane_Doe").mkdir(parents=True)
    listing = root / "list.txt"
    listing.write_text("Jane_Doe/jane-wedding.jpg\n")  # never written: unreadable
    res = run_filter_real([listing], tmp_path / "out", dataclasses.replace(_options(), pseudonymise=True),
                          salt=b"0123456789abcdef-salt", config=_config())
    (row,) = res.summary.decisions.to_dict("records")
    assert (row["stage"], row["reason"], row["m.decode_detail"]) == ("decode", "unreadable", "FileNotFoundError")
    for path in (res.out / "decisions").iterdir():
        assert b"Jane" not in path.read_bytes() and b"wedding" not in path.read_bytes()


def test_report_groups_by_reason_and_shows_one_example_detail(tmp_path):
    log = pd.DataFrame({
        "key": ["a", "b", "c", "d"], "source": ["a", "b", "c", "d"], "accepted": [False, False, False, True],
        "stage": ["decode", "decode", "decode", "encode"], "reason": ["unreadable", "unreadable", "empty", ""],
        "error": [False] * 4,
        "m.decode_detail": ["HTTPError: 403 Forbidden | x", "FileNotFoundError: b", None, None],
    })
    rej = rejections(log)
    assert rej[["stage", "reason", "count", "example"]].values.tolist() == [
        ["decode", "unreadable", 2, "HTTPError: 403 Forbidden | x"], ["decode", "empty", 1, ""]]
    paths = write_report(tmp_path, log, thresholds={}, iqa="piqe", detector="dlib")
    md = paths["markdown"].read_text()
    assert "| decode | unreadable | 2 | HTTPError: 403 Forbidden \\| x |" in md
    assert "HTTPError: 403 Forbidden" in paths["html"].read_text()


@pytest.mark.parametrize("cwd", [None, "/somewhere"])
def test_resolve_source_leaves_urls_and_absolute_paths_alone(cwd):
    from pipelines.filter_real import resolve_source

    assert resolve_source("s3://bucket/a.jpg", cwd) == "s3://bucket/a.jpg"
    assert resolve_source("/data/a.jpg", cwd) == "/data/a.jpg"
    assert resolve_source("fr-in/a.jpg", cwd) == ("fr-in/a.jpg" if cwd is None else "/somewhere/fr-in/a.jpg")


# ---- benchmarks ------------------------------------------------------------------------------------------


def test_filter_real_benchmark_prints_both_ratios(capsys):
    from benchmarks.perf import main

    main(["filter-real", "--n", "3", "--rounds", "1", "--no-dask"])
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1].startswith("ratio=")  # (b)/(a), as issue 4 defines it, stays the last line
    crop_line = next(line for line in lines if line.startswith("(b)/(decode at crop scale) = "))
    assert float(crop_line.split("=")[1].split()[0]) > 0


def test_develop_raw_benchmark_prints_end_to_end_and_the_real_megapixels(capsys):
    from benchmarks.perf import main

    main(["develop-raw", "--n", "2", "--width", "640", "--height", "480", "--e2e", "1", "--jxl", "1"])
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[-1].startswith("ratio=")  # ours/bare of the development path, as issue 5 defines it
    e2e = next(line for line in lines if line.startswith("end to end per capture"))
    assert "develop" in e2e and "faces" in e2e and "encode" in e2e and "x bare rawpy.postprocess" in e2e
    assert "12 MP" not in out and "per 0.3 MP file" in out


# ---- --refs needs identities to match (the gallery layout) ---------------------------------------------


def _refs_folder(root: Path, identities: list[str]) -> Path:
    for ident in identities:
        (root / ident).mkdir(parents=True, exist_ok=True)
        (root / ident / "ref.png").write_bytes(imageio.encode_image(skimage.data.astronaut()[40:300, 100:360], "png"))
    return root


def test_refs_with_a_flat_gallery_is_exit_2_before_any_work_and_explains_the_layout(tmp_path):
    import subprocess
    import sys

    flat = tmp_path / "gallery"
    flat.mkdir()
    (flat / "astronaut.png").write_bytes(imageio.encode_image(skimage.data.astronaut(), "png"))
    refs = _refs_folder(tmp_path / "refs", ["astronaut"])
    proc = subprocess.run([sys.executable, "-m", "inscene", "filter-real", str(flat), "--refs", str(refs),
                           "--out", str(tmp_path / "real"), "--detector", "dlib", "--iqa", "piqe", "--in-process"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    error = proc.stderr.strip()
    assert error.startswith("error: --refs") and "\n" not in error  # one line
    assert "INPUT/<identity>/*.jpg" in error and "REFS/<identity>/*.jpg" in error
    assert not (tmp_path / "real").exists()  # refused before any work, nothing half-written


def test_refs_with_the_cc12m_profile_names_the_profile(tmp_path):
    from inscene.errors import BadInputError

    photo = tmp_path / "gallery" / "astro_person" / "astronaut.png"
    photo.parent.mkdir(parents=True)
    photo.write_bytes(imageio.encode_image(skimage.data.astronaut(), "png"))
    options = FilterOptions(profile="cc12m", detector="dlib", iqa="piqe")
    with pytest.raises(BadInputError, match="--profile cc12m reads no identities"):
        run_filter_real([tmp_path / "gallery"], tmp_path / "out", options,
                        refs=_refs_folder(tmp_path / "refs", ["astro_person"]), config=_config())
    assert not (tmp_path / "out").exists()


def test_identities_without_a_reference_folder_are_counted_in_one_warning(tmp_path):
    from rich.console import Console

    gallery = tmp_path / "gallery"
    for ident in ("astro_person", "other_person", "third_person"):
        (gallery / ident).mkdir(parents=True)
        (gallery / ident / "astronaut.png").write_bytes(imageio.encode_image(skimage.data.astronaut(), "png"))
    console = Console(file=io.StringIO(), width=300)
    res = run_filter_real([gallery], tmp_path / "out", _options(), refs=_refs_folder(tmp_path / "refs",
                          ["astro_person"]), config=_config(), console=console)
    warnings = [line for line in console.file.getvalue().splitlines() if "warning" in line]
    assert warnings == ["filter-real: warning: 2 of 3 identities of the inputs have no folder of references "
                        "REFS/<identity>/; their samples get no references"]
    ids = json.loads((res.out / "dataset" / "identities.json").read_text())["identities"]
    assert [i["identity_id"] for i in ids] == ["astro_person"]


def test_out_that_is_a_file_is_one_line_exit_2(tmp_path):
    import subprocess
    import sys

    import skimage.data

    from inscene.imageio import encode_image

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(encode_image(skimage.data.astronaut(), "png"))
    (tmp_path / "afile").write_text("x")
    proc = subprocess.run([sys.executable, "-m", "inscene", "filter-real", str(tmp_path / "in"), "--out",
                           str(tmp_path / "afile"), "--in-process", "--detector", "dlib", "--iqa", "piqe"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "is an existing file, not a folder" in proc.stderr
