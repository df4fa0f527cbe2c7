"""`inscene develop-raw` end to end: generated captures (uncompressed Bayer, JPEG-XL Bayer, JPEG-XL
LinearRaw) + references -> a test split and identity shards that the shard reader and HF load."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import skimage.data
from PIL import Image
from typer.testing import CliRunner

from inscene import imageio
from inscene.cli import app
from inscene.config import InsceneConfig
from inscene.dng import rgb8_to_dng
from inscene.errors import BadInputError
from inscene.raw import jpegxl_available
from inscene.schema import Sample
from inscene.shards import ShardReader, verify_dataset
from pipelines.develop_raw import hf_splits, load_groups, plan_inputs, run_develop_raw

JXL = "jpegxl" if jpegxl_available() else "none"
PARIS = (48.8584, 2.2945)


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """alice: astronaut captures (3 good flavours + bad files); bob: a face-less capture; carol: no refs;
    dave: only an unreadable reference."""
    root = tmp_path_factory.mktemp("raw-inputs")
    face = skimage.data.astronaut()[32:288, 96:352]  # 256 x 256, face ~100 px
    noface = skimage.data.coffee()[:192, :256]
    cap, refs = root / "captures", root / "refs"
    files = {
        "alice/IMG_0001.dng": rgb8_to_dng(face, iso=3200, noise=20, seed=1, gps=PARIS),
        "alice/IMG_0002.dng": rgb8_to_dng(face, iso=1600, compression=JXL, noise=10, seed=2, orientation=6),
        "alice/IMG_0003.dng": rgb8_to_dng(face, iso=800, cfa_pattern=None, compression=JXL, seed=3),
        "alice/cut.dng": rgb8_to_dng(face)[:50_000],
        "alice/photo.dng": imageio.encode_image(face, "jpeg"),
        "alice/zstd.dng": rgb8_to_dng(face, compression=50000),
        "alice/notags.dng": rgb8_to_dng(face, omit_tags=frozenset({33421, 33422})),
        "alice/IMG_0001.jpg": imageio.encode_image(face, "jpeg"),  # the phone's JPEG twin: ignored
        "bob/IMG_0100.dng": rgb8_to_dng(noface, iso=1000),
        "carol/IMG_0200.dng": rgb8_to_dng(face, iso=800),
        "dave/IMG_0300.dng": rgb8_to_dng(face, iso=800),
    }
    for rel, data in files.items():
        (cap / rel).parent.mkdir(parents=True, exist_ok=True)
        (cap / rel).write_bytes(data)
    (refs / "alice").mkdir(parents=True)
    (refs / "alice" / "gallery1.jpg").write_bytes(imageio.encode_image(skimage.data.astronaut()[:256, 128:384], "jpeg"))
    (refs / "alice" / "gallery2.png").write_bytes(imageio.encode_image(face[::2, ::2], "png"))
    (refs / "bob").mkdir()
    (refs / "bob" / "me.jpg").write_bytes(imageio.encode_image(skimage.data.astronaut()[::2, ::2], "jpeg"))
    (refs / "carol").mkdir()  # an identity folder with no references
    (refs / "dave").mkdir()
    (refs / "dave" / "broken.jpg").write_bytes(b"not a jpeg at all")
    (refs / "erin").mkdir()  # references without captures: skipped
    (refs / "erin" / "x.png").write_bytes(imageio.encode_image(face, "png"))
    return {"captures": cap, "refs": refs, "files": files}


@pytest.fixture(scope="module")
def run(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("raw-out") / "dataset"
    result = run_develop_raw(inputs["captures"], inputs["refs"], out, partition_size=4)
    return result


def _decisions(result):
    df = result.captures.decisions.set_index("key")
    return df


def test_good_captures_become_samples_and_bad_ones_rows_with_reasons(run):
    assert run.ok
    d = _decisions(run)
    for key in ("alice_IMG_0001", "alice_IMG_0002", "alice_IMG_0003", "bob_IMG_0100"):
        assert bool(d.loc[key, "accepted"]), (key, d.loc[key, "reason"])
    expect = {
        "alice_cut": ("develop", "truncated"),
        "alice_photo": ("develop", "not_raw: the file is a JPEG image"),
        "alice_zstd": ("develop", "unsupported_compression: DNG compression ZSTD"),
        "alice_notags": ("develop", "missing_tags: DNG lacks required tag(s) CFARepeatPatternDim, CFAPattern"),
        "carol_IMG_0200": ("identity", "identity 'carol' has no reference images"),
        "dave_IMG_0300": ("identity", "identity 'dave' has no usable reference image (1 rejected"),
    }
    for key, (stage, reason) in expect.items():
        assert not bool(d.loc[key, "accepted"]) and d.loc[key, "stage"] == stage, key
        assert d.loc[key, "reason"].startswith(reason), (key, d.loc[key, "reason"])
    assert run.captures.errors == 0 and run.captures.rejected == 6
    refs = run.refs.decisions.set_index("key")
    assert refs.loc["dave_ref_broken", "reason"].startswith("not_an_image")
    assert "erin" in run.plan.refs_without_captures and "alice/IMG_0001.jpg" in run.plan.ignored
    assert len(run.rejections()) == 7


def test_dataset_verifies_and_holds_nothing_of_rejected_files(run):
    report = verify_dataset(run.out)
    assert report.ok, report.problems
    assert not list(run.out.rglob("*.tmp"))
    test = {s.key: s for s in ShardReader(run.out, split="test")}
    assert sorted(test) == ["alice_IMG_0001", "alice_IMG_0002", "alice_IMG_0003", "bob_IMG_0100"]
    ids = {s.key: s for s in ShardReader(run.out, split="identities")}
    assert sorted(ids) == ["alice_ref_gallery1", "alice_ref_gallery2", "bob_ref_me"]  # dave/erin/carol: none
    assert {s.meta["identity_id"] for s in test.values()} == {s.meta["identity_id"] for s in ids.values()}


def test_samples_record_identity_group_capture_development_provenance_faces(run, inputs):
    test = {s.key: s for s in ShardReader(run.out, split="test")}
    one = test["alice_IMG_0001"]
    assert list(one.members) == ["lq.png"] and one.images["lq.png"].shape == (256, 256, 3)  # LQ only, no GT
    m = one.meta
    assert m["identity_id"] == "alice" and m["split"] == "test" and m["subset"] == "real"
    assert m["group"] == m["iso_group"] == "iso3200" and m["capture_iso"] == 3200
    assert m["capture_make"] == "InScene" and m["capture_exposure_time"] == pytest.approx(1 / 60)
    assert m["capture_timestamp"] == "2025-06-01T12:00:00"
    assert json.loads(m["develop"])["demosaic"] == "AHD" and m["decoder"].startswith("libraw-")
    assert m["sha256"] == imageio.sha256_bytes(inputs["files"]["alice/IMG_0001.dng"])
    assert m["source"] == "alice/IMG_0001.dng"
    assert m["n_faces"] >= 1 and m["no_face"] is False
    sample = Sample.from_meta(m)
    assert sample.faces[0].box[2] > sample.faces[0].box[0]
    assert test["alice_IMG_0002"].meta["decoder"].startswith("tifffile+imagecodecs-jpegxl" if JXL == "jpegxl" else "l")
    assert test["alice_IMG_0002"].meta["orientation"] == 6  # stored sideways, developed upright
    assert test["alice_IMG_0003"].meta["group"] == "iso800"
    bob = test["bob_IMG_0100"].meta
    assert bob["no_face"] is True and bob["n_faces"] == 0 and bob["iso_group"] == "iso800"  # 1000 -> nearest
    # never GPS: not in any column, and the PNG carries no metadata at all
    text = json.dumps([s.meta for s in test.values()])
    assert "GPS" not in text.upper().replace("GPSI", "") and "48.85" not in text
    png = Image.open(io.BytesIO(one.members["lq.png"]))
    assert not png.getexif() and not png.info.get("exif")


def test_jpegxl_captures_match_the_uncompressed_one(run):
    """Same scene: the JPEG-XL Bayer capture develops like the uncompressed one (different noise seeds)."""
    test = {s.key: s.images["lq.png"].astype(float) for s in ShardReader(run.out, split="test")}
    plain, jxl = test["alice_IMG_0001"], np.rot90(test["alice_IMG_0002"], k=1)  # undo orientation 6
    assert plain.shape == jxl.shape
    assert np.abs(plain - jxl).mean() < 12  # noise 20 vs 10 apart, same development


def test_every_split_loads_with_hf_datasets_and_webdataset(run):
    import webdataset as wds

    from inscene.shards import hf_data_files

    loaded = hf_splits(run.out)
    assert len(loaded["test"]) == 4 and len(loaded["identities"]) == 3
    row = loaded["test"][0]
    assert row["lq.png"].size == (row["json"]["width"], row["json"]["height"])
    assert set(loaded["identities"][0]) >= {"ref.png", "json"}
    files = hf_data_files(run.out)
    assert sum(1 for _ in wds.WebDataset(files["test"], shardshuffle=False, empty_check=False)) == 4


def test_rerun_resumes_and_other_settings_are_refused(run, inputs):
    again = run_develop_raw(inputs["captures"], inputs["refs"], run.out, partition_size=4)
    assert again.captures.skipped_partitions == again.captures.partitions
    assert again.refs.skipped_partitions == again.refs.partitions
    assert again.captures.accepted == run.captures.accepted
    config = InsceneConfig()
    config.raw.output_bps = 16
    with pytest.raises(BadInputError, match="other inputs or settings"):
        run_develop_raw(inputs["captures"], inputs["refs"], run.out, config=config, partition_size=4)


def test_groups_file_tags_captures(inputs, tmp_path):
    csv = tmp_path / "groups.csv"
    csv.write_text("file,group\nalice/IMG_0001.dng,motion\nIMG_0003.dng,iso800\nnobody.dng,x\n")
    assert load_groups(csv)["alice/IMG_0001.dng"] == "motion"
    yml = tmp_path / "groups.yaml"
    yml.write_text("alice/IMG_0001.dng: [iso3200, motion]\n")
    assert load_groups(yml) == {"alice/IMG_0001.dng": "iso3200+motion"}
    plan = plan_inputs(inputs["captures"], inputs["refs"], load_groups(csv))
    groups = {it.key: it.data["group"] for it in plan.captures}
    assert groups["alice_IMG_0001"] == "motion" and groups["alice_IMG_0003"] == "iso800"
    assert groups["alice_IMG_0002"] == ""  # default: the ISO group, decided after development
    assert plan.unused_groups == ["nobody.dng"]
    bad = tmp_path / "groups.txt"
    bad.write_text("a;b\n1;2\n")
    with pytest.raises(BadInputError):
        load_groups(bad)


def test_missing_folders_and_empty_captures_are_bad_input(tmp_path):
    (tmp_path / "caps" / "alice").mkdir(parents=True)
    (tmp_path / "refs").mkdir()
    with pytest.raises(BadInputError, match="no RAW captures"):
        plan_inputs(tmp_path / "caps", tmp_path / "refs")
    with pytest.raises(BadInputError, match="not a folder"):
        plan_inputs(tmp_path / "nope", tmp_path / "refs")


def test_cli_develop_raw(inputs, tmp_path):
    runner = CliRunner()
    out = tmp_path / "cli-out"
    res = runner.invoke(app, [
        "develop-raw", str(inputs["captures"]), "--refs", str(inputs["refs"]), "--out", str(out),
        "--in-process", "--bits", "16", "--demosaic", "linear", "--no-auto-bright",
    ])
    assert res.exit_code == 0, res.output
    assert "developed" in res.output and "truncated" in res.output
    sample = next(iter(ShardReader(out, split="test", decode_images=False)))
    arr = imageio.decode_image(sample.members["lq.png"], bit_depth=16)
    assert json.loads(sample.meta["develop"])["output_bps"] == 16 and sample.meta["bit_depth"] == 16
    assert arr.dtype == np.uint16 and arr.max() > 255
    for bad in (["--bits", "12"], ["--format", "jpeg", "--bits", "16"], ["--gamma", "x"], ["--highlight", "no"]):
        res = runner.invoke(app, ["develop-raw", str(inputs["captures"]), "--refs", str(inputs["refs"]),
                                  "--out", str(tmp_path / "bad"), "--in-process", *bad])
        assert isinstance(res.exception, BadInputError), (bad, res.output)  # exit 2 through main()
    assert not (tmp_path / "bad").exists()
    proc = subprocess.run(
        [sys.executable, "-m", "inscene", "develop-raw", str(inputs["captures"]), "--refs", str(tmp_path / "none"),
         "--out", str(tmp_path / "bad"), "--in-process"], capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2 and proc.stderr.strip().startswith("error: --refs") and "Traceback" not in proc.stderr


@pytest.mark.slow
def test_dask_spawn_workers_develop_the_same_split(inputs, run, tmp_path):
    """Dask worker processes (spawn: LibRaw's OpenMP deadlocks after fork) give the same shards."""
    from inscene.runtime import ClusterOptions

    out = tmp_path / "dask"
    result = run_develop_raw(inputs["captures"], inputs["refs"], out, partition_size=4,
                             cluster=ClusterOptions(workers=2, dashboard=False))
    assert result.ok and result.captures.accepted == run.captures.accepted
    mine = {s.key: s.members for s in ShardReader(out, decode_images=False)}
    theirs = {s.key: s.members for s in ShardReader(run.out, decode_images=False)}
    assert mine == theirs


def test_demo_step(tmp_path):
    from pipelines.develop_raw import demo_step

    summary = demo_step(tmp_path)
    assert summary["developed"] == 3 and summary["rejected"] == 1 and summary["errors"] == 0
    assert summary["hf_rows"] == {"identities": 2, "test": 3}
    if jpegxl_available():
        assert sum(n for d, n in summary["decoders"].items() if "jpegxl" in d) == 2


def test_the_evaluator_finds_the_split_without_options(run):
    """benchmarks' ``test-real`` split reads ``test/real-*.tar`` and its ``lq.png`` as written here."""
    splits = pytest.importorskip("benchmarks.splits")
    source = splits.ShardSource(run.out, "test-real")
    refs, problems = source.refs()
    assert not problems and len(refs) == 4 and not source.has_gt
    assert {r.meta["identity_id"] for r in refs} == {"alice", "bob"}


def _small_inputs(root):
    face = skimage.data.astronaut()[32:288, 96:352]
    (root / "cap" / "alice").mkdir(parents=True)
    (root / "refs" / "alice").mkdir(parents=True)
    for i in (1, 3):
        (root / "cap" / "alice" / f"IMG_000{i}.dng").write_bytes(rgb8_to_dng(face, iso=800, seed=i))
    (root / "refs" / "alice" / "g.png").write_bytes(imageio.encode_image(face[::2, ::2], "png"))
    return root / "cap", root / "refs"


def test_rerun_over_changed_captures_is_refused_and_old_records_resume(tmp_path):
    cap, refs = _small_inputs(tmp_path)
    out = tmp_path / "out"
    first = run_develop_raw(cap, refs, out, partition_size=1)
    assert first.captures.accepted == 2
    record = out / "develop-raw.json"
    old = json.loads(record.read_text())
    del old["listing_digest"]  # as written before listings were fingerprinted: still resumes
    record.write_text(json.dumps(old))
    again = run_develop_raw(cap, refs, out, partition_size=1)
    assert again.captures.skipped_partitions == again.captures.partitions
    (cap / "alice" / "IMG_0002.dng").write_bytes((cap / "alice" / "IMG_0001.dng").read_bytes())  # a new capture
    with pytest.raises(BadInputError, match="over other input files .* use a new --out"):
        run_develop_raw(cap, refs, out, partition_size=1)


def test_out_that_is_a_file_is_bad_input(tmp_path):
    cap, refs = _small_inputs(tmp_path)
    (tmp_path / "afile").write_text("x")
    with pytest.raises(BadInputError, match="is an existing file, not a folder"):
        run_develop_raw(cap, refs, tmp_path / "afile")
    with pytest.raises(BadInputError, match="cannot create --out folder"):
        run_develop_raw(cap, refs, tmp_path / "afile" / "sub")
