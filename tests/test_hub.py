"""`inscene publish` and `inscene.load`: the Hub repo folder, its card, the privacy gate, the upload
(against a fake HfApi: there is no Hub here) and the loader.

Inputs are dataset folders written with ShardWriter and ``Sample(...).to_meta()`` metadata, laid
out as the pipelines write them: ``{split}/{subset}-NNNNN.tar``; identity references in a ``refs``
subset (filter-real) or an ``identities/refs`` shard folder (develop-raw); the phone test captures
as ``test/real`` (develop-raw).
"""

from __future__ import annotations

import fnmatch
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from inscene import hub
from inscene.errors import InsceneError
from inscene.imageio import encode_image, sha256_bytes
from inscene.schema import DegradationParams, Face, Provenance, Sample
from inscene.shards import ShardWriter

SALT = b"a-test-salt-of-32-bytes-exactly!"
REPO = "inscene-org/inscene-test"


def _png(seed: int, h: int = 24, w: int = 32) -> bytes:
    return encode_image(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8), "png")


def _gps_jpeg() -> bytes:
    ex = Image.Exif()
    gps = ex.get_ifd(0x8825)
    gps[1], gps[2] = "N", (52.0, 31.0, 12.0)
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (90, 120, 30)).save(buf, "JPEG", exif=ex)
    return buf.getvalue()


def _meta(key: str, split: str, subset: str, data: bytes, identity: str = "", source: str | None = None,
          **extra) -> dict:
    face = Face(box=[4, 4, 20, 20], landmarks=[[8, 9], [15, 9], [12, 12], [9, 16], [15, 16]], score=0.9,
                backend="dlib-hog")
    sample = Sample(
        key=key, split=split, subset=subset, width=32, height=24, identity_id=identity or None, faces=[face],
        prompt="a person in a park. sunny day." if subset == "synthetic" else None,
        provenance=Provenance(source=source or f"{key}.png", sha256=sha256_bytes(data),
                              backends={"detector": "dlib-hog"}),
    )
    return {**sample.to_meta(), **extra}


def _write(root: Path, split: str, subset: str, samples: list[tuple[str, dict[str, bytes], dict]]) -> None:
    with ShardWriter(root, split, subset) as w:
        for key, members, meta in samples:
            w.write(key, members, meta)


def _declare(root: Path, **subsets) -> None:
    (root / "inscene.json").write_text(json.dumps({"format": "inscene-declaration/1", "subsets": subsets,
                                                   "columns": {"identity_similarity": "ArcFace similarity."}}))


CONSENT = "Everyone pictured agreed in writing to publication for research."
REAL_DECL = {"license": "cc-by-nc-4.0", "consent": CONSENT, "pseudonymisation": "hmac-sha256"}
IDENT_DECL = {"license": "cc-by-nc-4.0", "consent": "CelebRef-HQ research licence; gallery people: " + CONSENT,
              "pseudonymisation": "hmac-sha256"}


def make_synthetic(root: Path) -> None:
    """build-synthetic + degrade output: train scenes, degraded val pairs, refs of CelebRef-HQ ids."""
    train = []
    for i in range(3):
        img = _png(i)
        meta = _meta(f"syn{i}", "train", "synthetic", img, identity=f"celebref_{i % 2:04d}",
                     musiq=70.0 + i, clipiqa=0.7, maniqa=0.45, identity_similarity=0.6)
        train.append((f"syn{i}", {"png": img}, meta))
    _write(root, "train", "synthetic", train)
    deg = DegradationParams(pipeline="realesrgan", seed=1, identity=True)
    val = []
    for i in range(2):
        hq = _png(10 + i)
        meta = _meta(f"synval{i}", "val", "synthetic", hq, identity="celebref_0007", musiq=72.0, clipiqa=0.72,
                     maniqa=0.44, identity_similarity=0.7)
        meta["degradation"] = deg.model_dump_json()
        val.append((f"synval{i}", {"hq.png": hq, "lq0.png": _png(20 + i), "lq0.json": deg.model_dump_json().encode()},
                    meta))
    _write(root, "val", "synthetic", val)
    refs = []
    for ident in ("celebref_0000", "celebref_0001", "celebref_0007"):
        for r in range(2):
            img = _png(hash((ident, r)) % 1000)
            refs.append((f"{ident}_r{r}", {"ref.png": img},
                         _meta(f"{ident}_r{r}", "train", "refs", img, identity=ident, reference_index=r,
                               source=f"CelebRef-HQ/{ident}/{r}.jpg")))
    _write(root, "train", "refs", refs)
    (root / "degrade.json").write_text(json.dumps({"input": str(root.parent / "people" / "alice"), "seed": 0,
                                                   "profile": "realesrgan", "salt_fingerprint": "abc123"}))
    _declare(root,
             synthetic={"license": "other", "license_name": "flux-1-dev-non-commercial-license",
                        "license_link": "https://example.org/flux-license", "source": "InfiniteYou on FLUX.1-dev"},
             identities=IDENT_DECL)


def make_real(root: Path, *, gps_key: str | None = None, identities=("alice", "bob")) -> None:
    """filter-real output: real gallery (pseudonymised), nonref CC12M, gallery refs."""
    ids = [hub.pseudonymise(n, SALT) if not n.startswith("raw:") else n[4:] for n in identities]
    real = []
    for i in range(2):
        members = {"png": _png(30 + i)}
        if gps_key == f"real{i}":
            members["jpg"] = _gps_jpeg()  # e.g. the original camera JPEG kept beside the crop
        real.append((f"real{i}", members, _meta(f"real{i}", "train", "real", members["png"], identity=ids[i],
                                                musiq=74.0, clipiqa=0.68, maniqa=0.5)))
    _write(root, "train", "real", real)
    nonref = [(f"cc{i}", {"png": _png(40 + i)},
               _meta(f"cc{i}", "train", "nonref", _png(40 + i), source=f"https://example.org/cc12m/{i}.jpg",
                     musiq=69.0, clipiqa=0.69, maniqa=0.46)) for i in range(2)]
    _write(root, "train", "nonref", nonref)
    refs = [(f"ref{i}", {"ref.png": _png(50 + i)}, _meta(f"ref{i}", "train", "refs", _png(50 + i),
                                                         identity=ids[i % 2], reference_index=0)) for i in range(2)]
    _write(root, "train", "refs", refs)
    _declare(root, real=REAL_DECL, identities=IDENT_DECL,
             nonref={"license": "cc-by-4.0", "consent": "CC12M: images published under their licences; takedown "
                     "on request."})


def make_raw(root: Path) -> None:
    """develop-raw output: test/real phone captures and identities/refs references."""
    ident = hub.pseudonymise("carol", SALT)
    img = _png(60)
    _write(root, "test", "real", [("cap0", {"lq.png": img}, _meta("cap0", "test", "real", img, identity=ident))])
    ref = _png(61)
    _write(root, "identities", "refs", [("cap_ref0", {"ref.png": ref},
                                         _meta("cap_ref0", "identities", "refs", ref, identity=ident))])
    _declare(root, **{"test-real": REAL_DECL, "identities": IDENT_DECL})


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> list[Path]:
    base = tmp_path_factory.mktemp("inputs")
    dirs = [base / "synthetic", base / "real", base / "raw"]
    make_synthetic(dirs[0])
    make_real(dirs[1])
    make_raw(dirs[2])
    return dirs


@pytest.fixture(scope="module")
def published(inputs, tmp_path_factory) -> hub.PublishResult:
    out = tmp_path_factory.mktemp("pub") / "repo"
    return hub.publish(inputs, REPO, out=out, dry_run=True, check="full")


EXPECTED = {
    ("synthetic", "train"): 3, ("synthetic", "val"): 2, ("real", "train"): 2, ("nonref", "train"): 2,
    ("test-real", "test"): 1, ("identities", "train"): 8, ("identities", "test"): 1,
}


def test_dry_run_folder_loads_with_hf_datasets_every_config_and_split(published, tmp_path):
    import datasets

    staged = published.staged
    out = staged.out
    assert {(g.subset, g.split): g.images for g in staged.groups} == EXPECTED
    assert published.validation.ok and published.validation.mode == "full"
    assert published.validation.rows == EXPECTED
    for (subset, split), n in EXPECTED.items():
        ds = datasets.load_dataset(str(out), name=subset, split=split, cache_dir=str(tmp_path / "hf"))
        assert len(ds) == n
        members = {m for g in staged.groups if g.subset == subset for m in g.members}
        assert members | {"json", "__key__", "__url__"} <= set(ds.column_names), (subset, split)
        row = ds[0]
        assert set(staged.group(subset, split).meta_keys) <= set(row["json"])
    # the union of a config's columns: train scenes have no LQ, val pairs do
    train = datasets.load_dataset(str(out), name="synthetic", split="train", cache_dir=str(tmp_path / "hf"))
    assert train[0]["lq0.png"] is None and train[0]["png"].size == (32, 24)
    # only allowlisted files were staged
    files = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    allowed = {"README.md", "inscene.json", hub.STATE_NAME}
    for f in files - allowed:
        assert fnmatch.fnmatch(f, "data/*/index.json") or any(
            fnmatch.fnmatch(f, f"data/*/*/{pat}") for pat in hub._SHARD_FILE_PATTERNS
        ), f
    assert "data/test-real/test/test-real-00000.tar" in files  # develop-raw's test/real
    assert "data/identities/test/identities-00000.tar" in files  # develop-raw's identities/refs


def test_card_yaml_parses_and_body_is_complete(published, inputs):
    from huggingface_hub import DatasetCard

    card = DatasetCard.load(published.staged.out / "README.md")
    data = card.data.to_dict()
    assert [c["config_name"] for c in data["configs"]] == ["nonref", "synthetic", "real", "test-real", "identities"]
    synthetic = next(c for c in data["configs"] if c["config_name"] == "synthetic")
    assert synthetic["data_files"] == [{"split": "train", "path": "data/synthetic/train/*.tar"},
                                       {"split": "val", "path": "data/synthetic/val/*.tar"}]
    # three licences over the configs: the YAML's one licence points at the card's per-config table
    assert data["license"] == "other" and data["license_name"] == hub.PER_CONFIG_LICENSE
    assert data["license_link"] == "README.md"
    assert data["task_categories"] == ["image-to-image"] and data["size_categories"] == ["n<1K"]
    infos = {i["config_name"]: i for i in data["dataset_info"]}
    assert {f["name"] for f in infos["synthetic"]["features"]} >= {"png", "hq.png", "lq0.png", "lq0.json", "json"}
    text = card.text
    # Table 1 style rows: synthetic train 3 images, 2 identities, mean MUSIQ (70+71+72)/3
    assert "| Train | synthetic | Synthetic | 3 | 2 | 0.7000 | 0.4500 | 71.0000 |" in text
    assert "| Train | Total (train) | Mix | 7 | 4 |" in text
    assert "| Test | InScene Test | Real | 100 | 10 |" in text  # the paper's table beside ours
    for column in ("`json.identity_id`", "`json.face_landmarks`", "`lq0.png`", "`json.identity_similarity`"):
        assert column in text
    assert "(not documented by the publisher)" not in text and published.undocumented == []
    assert "arXiv:2603.16570" in text and "@article" in text
    assert CONSENT in text and "hmac-sha256" in text
    assert "0.55" in text and "MUSIQ >= 65.0" in text  # thresholds of the construction
    assert "`identity` | True ×2" in text  # the degradation records (one per LQ version)
    assert "profile=realesrgan" in text and "seed=0" in text  # the degrade run record ...
    assert "salt_fingerprint" not in text and "people/alice" not in card.content  # ... no paths, no salt
    for d in inputs:  # no local path leaks into the card
        assert str(d) not in card.content


def test_summary_table_shows_counts(published):
    from rich.console import Console

    console = Console(width=200, record=True)
    console.print(hub.summary_table(published, REPO, dry_run=True))
    text = console.export_text()
    assert "synthetic" in text and "test-real" in text and "71.00" in text


def test_privacy_gate_names_a_planted_gps_tag_and_leaves_nothing_staged(tmp_path):
    make_real(tmp_path / "real", gps_key="real1")
    out = tmp_path / "repo"
    with pytest.raises(hub.PrivacyError) as err:
        hub.publish([tmp_path / "real"], REPO, out=out, dry_run=True)
    assert err.value.exit_code == 2
    (problem,) = err.value.problems
    assert problem.where == "real/train/real1" and "GPSInfo" in problem.reason and "jpg" in problem.reason
    assert not (out / "data").exists() and not (out / "README.md").exists()


def test_privacy_gate_refuses_a_real_subset_without_licence_or_consent(tmp_path):
    make_real(tmp_path / "real")
    _declare(tmp_path / "real", real={"license": "cc-by-nc-4.0"}, nonref={"consent": "yes"},
             identities={"license": "other"})
    with pytest.raises(hub.PrivacyError) as err:
        hub.publish([tmp_path / "real"], REPO, out=tmp_path / "repo", dry_run=True)
    lines = [p.line() for p in err.value.problems]
    assert any(line.startswith("subset real: photos of real people without a consent statement") for line in lines)
    assert any(line.startswith("subset nonref: no licence declared") for line in lines)
    assert any(line.startswith("subset identities: licence 'other' needs") for line in lines)  # the refs


def test_privacy_gate_catches_a_raw_identity_name_and_a_local_source_path(tmp_path):
    make_real(tmp_path / "real", identities=("raw:jane_doe", "bob"))
    with pytest.raises(hub.PrivacyError) as err:
        hub.publish([tmp_path / "real"], REPO, out=tmp_path / "repo", dry_run=True,
                    declaration=_full_real_declaration(tmp_path))
    wheres = {p.where for p in err.value.problems if "jane_doe" in p.reason}
    assert wheres == {"real/train/real0", "identities/train/ref0"}  # the sample and the identity's reference
    # a develop-raw style source naming the person's folder
    root = tmp_path / "raw"
    img = _png(1)
    _write(root, "test", "real", [("cap0", {"lq.png": img}, _meta("cap0", "test", "real", img,
                                                                   identity=hub.pseudonymise("carol", SALT),
                                                                   source="Carol Smith/IMG_0001.dng"))])
    _declare(root, **{"test-real": REAL_DECL})
    with pytest.raises(hub.PrivacyError) as err:
        hub.publish([root], REPO, out=tmp_path / "repo2", dry_run=True)
    assert [p.where for p in err.value.problems] == ["test-real/test/cap0"]
    assert "local path" in err.value.problems[0].reason


def _full_real_declaration(tmp_path: Path) -> Path:
    path = tmp_path / "decl.json"
    path.write_text(json.dumps({"subsets": {"real": REAL_DECL, "nonref": {"license": "cc-by-4.0", "consent": "x"},
                                            "identities": REAL_DECL}}))
    return path


def test_privacy_gate_exits_2_from_the_command_line(tmp_path):
    import subprocess
    import sys

    make_real(tmp_path / "real", identities=("raw:jane_doe", "bob"))
    proc = subprocess.run(
        [sys.executable, "-m", "inscene", "publish", str(tmp_path / "real"), "--repo-id", REPO, "--dry-run",
         "--out", str(tmp_path / "repo"), "--declaration", str(_full_real_declaration(tmp_path))],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    assert "real/train/real0: identity_id 'jane_doe' is not a pseudonym" in proc.stderr


def test_pseudonyms_match_filter_real_and_the_salt_stays_outside(tmp_path):
    from pipelines.inputs import Pseudonymiser

    pid = hub.pseudonymise("alice", SALT)
    assert hub.is_pseudonym(pid) and pid == Pseudonymiser(SALT).identity("alice")
    assert pid != hub.pseudonymise("alice", SALT[::-1]) and not hub.is_pseudonym("alice")
    with pytest.raises(InsceneError, match="at least 16 bytes"):
        hub.pseudonymise("alice", b"short")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "salt").write_bytes(SALT)
    with pytest.raises(InsceneError, match="outside every dataset folder"):
        hub.load_salt(tmp_path / "data" / "salt", forbidden=[tmp_path / "data"])
    (tmp_path / "salt").write_bytes(SALT + b"\n")
    assert hub.load_salt(tmp_path / "salt", forbidden=[tmp_path / "data"]) == SALT
    with pytest.raises(InsceneError, match="invalid declaration"):  # a declaration cannot carry a secret
        (tmp_path / "bad.json").write_text(json.dumps({"subsets": {}, "salt": "s3cret"}))
        hub.load_declaration([], tmp_path / "bad.json")


def test_mapping_defaults_and_overrides():
    assert hub._target("test", "real", {"test"}, {}) == ("test-real", "test")
    assert hub._target("identities", "refs", {"test"}, {}) == ("identities", "test")
    assert hub._target("val", "refs", {"val"}, {}) == ("identities", "val")
    assert hub._target("val-synthetic", "synthetic", {"val-synthetic"}, {}) == ("synthetic", "val_synthetic")
    mapping = hub.parse_mapping(["test/real=real/test"])
    assert hub._target("test", "real", {"test"}, mapping) == ("real", "test")
    with pytest.raises(InsceneError, match="SPLIT/SUBSET=CONFIG/SPLIT"):
        hub.parse_mapping(["test=real"])


def test_rerun_reuses_the_staging_and_a_changed_input_rebuilds_it(tmp_path):
    make_real(tmp_path / "real")
    out = tmp_path / "repo"
    first = hub.publish([tmp_path / "real"], REPO, out=out, dry_run=True, check="stream")
    assert not first.reused and first.validation.mode == "stream" and first.validation.ok
    tar = out / "data/real/train/real-00000.tar"
    stamp = tar.stat().st_mtime_ns
    again = hub.publish([tmp_path / "real"], REPO, out=out, dry_run=True, check="stream")
    assert again.reused and tar.stat().st_mtime_ns == stamp
    shutil.rmtree(tmp_path / "real" / "train")
    img = _png(99)
    _write(tmp_path / "real", "train", "real",
           [("real9", {"png": img}, _meta("real9", "train", "real", img, identity=hub.pseudonymise("x", SALT)))])
    third = hub.publish([tmp_path / "real"], REPO, out=out, dry_run=True, check="stream")
    assert not third.reused and [(g.subset, g.images) for g in third.staged.groups] == [("real", 1)]
    with pytest.raises(InsceneError, match="not made by inscene publish"):
        (tmp_path / "other").mkdir()
        (tmp_path / "other" / "keep.txt").write_text("x")
        hub.publish([tmp_path / "real"], REPO, out=tmp_path / "other", dry_run=True)


# ---- upload: HfApi replaced at that one boundary (there is no Hub here) --------------------------


class FakeHfApi:
    """Records what inscene would send to the Hub; no network."""

    def __init__(self, *, public_existing: bool = False, fail: BaseException | None = None) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.public_existing = public_existing
        self.fail = fail

    def create_repo(self, repo_id, **kw):
        self.calls.append(("create_repo", {"repo_id": repo_id, **kw}))

    def repo_info(self, repo_id, **kw):
        self.calls.append(("repo_info", {"repo_id": repo_id, **kw}))
        return type("Info", (), {"private": not self.public_existing})()

    def upload_folder(self, **kw):
        if self.fail is not None:
            raise self.fail
        self.calls.append(("upload_folder", kw))


@pytest.fixture()
def online(monkeypatch):
    import huggingface_hub.constants as hconst

    monkeypatch.setattr(hconst, "HF_HUB_OFFLINE", False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_FAKEtoken1234567890abcdef")
    monkeypatch.setenv("HF_HOME", "/nonexistent-hf-home")


def test_upload_sends_every_folder_then_the_card_to_a_private_dataset_repo(published, inputs, online, monkeypatch):
    from typer.testing import CliRunner

    from inscene.cli import app

    api = FakeHfApi()
    monkeypatch.setattr(hub, "_hf_api", lambda: api)
    staged = published.staged
    result = CliRunner().invoke(app, ["publish", *map(str, inputs), "--repo-id", REPO, "--private",
                                      "--out", str(staged.out)])
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "hf_FAKEtoken" not in result.output
    assert "reused the staged folder" in result.output
    kinds = [k for k, _ in api.calls]
    assert kinds[:2] == ["create_repo", "repo_info"] and set(kinds[2:]) == {"upload_folder"}
    create = api.calls[0][1]
    assert create["repo_type"] == "dataset" and create["private"] is True and create["exist_ok"] is True
    uploads = [kw for k, kw in api.calls if k == "upload_folder"]
    assert all(kw["repo_type"] == "dataset" and kw["folder_path"] == str(staged.out) for kw in uploads)
    assert len(uploads) == len(EXPECTED) + 1
    assert uploads[-1]["allow_patterns"] == ["README.md", "inscene.json", "data/*/index.json"]  # the card last
    assert uploads[0]["allow_patterns"][0] == "data/nonref/train/*.tar"
    assert uploads[0]["delete_patterns"] == ["data/nonref/train/*"]
    # every staged file is sent by exactly one step; the local state file by none
    files = [p.relative_to(staged.out).as_posix() for p in staged.out.rglob("*") if p.is_file()]
    for f in files:
        hits = sum(any(fnmatch.fnmatch(f, pat) for pat in kw["allow_patterns"]) for kw in uploads)
        assert hits == (0 if f == hub.STATE_NAME else 1), f


def test_upload_errors_are_clear_and_never_show_the_token(published, online, monkeypatch):
    staged = published.staged
    with pytest.raises(InsceneError, match="already exists and is public"):
        hub.upload(staged, REPO, private=True, api=FakeHfApi(public_existing=True))
    token = "hf_FAKEtoken1234567890abcdef"
    with pytest.raises(InsceneError) as err:
        hub.upload(staged, REPO, api=FakeHfApi(fail=ConnectionError(f"no route to host (token {token})")))
    assert "rerun the same command to resume" in str(err.value) and token not in str(err.value)
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(InsceneError, match="no Hugging Face token"):
        hub.upload(staged, REPO, api=FakeHfApi())
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InsceneError, match="HF_HUB_OFFLINE"):
        hub.upload(staged, REPO, api=FakeHfApi())


def test_upload_plan_orders_folders_before_the_card(published):
    plan = hub.upload_plan(published.staged)
    assert plan[-1].files == ("README.md", "data/identities/index.json", "data/nonref/index.json",
                              "data/real/index.json", "data/synthetic/index.json", "data/test-real/index.json",
                              "inscene.json")
    assert plan[1].files == ("data/synthetic/train/synthetic-00000.parquet",
                             "data/synthetic/train/synthetic-00000.tar",
                             "data/synthetic/train/synthetic-00000.tar.json")


# ---- loader ---------------------------------------------------------------------------------------


def test_load_hf_joins_references_by_identity(published, tmp_path):
    import inscene

    ds = inscene.load(published.staged.out, "synthetic", "val", cache_dir=tmp_path / "hf")
    row = ds[0]
    assert row["record"].identity_id == "celebref_0007" and row["record"].faces[0].backend == "dlib-hog"
    assert row["lq0.png"].size == (32, 24)
    refs = row["references"]
    assert [r["key"] for r in refs] == ["celebref_0007_r0", "celebref_0007_r1"]  # from identities/train
    assert refs[0]["image"].size == (32, 24) and refs[0]["json"]["identity_id"] == "celebref_0007"
    stream = inscene.load(published.staged.out, "test-real", "test", streaming=True, cache_dir=tmp_path / "hf")
    row = next(iter(stream))
    assert [r["key"] for r in row["references"]] == ["cap_ref0"]  # identities/test


def test_load_webdataset_from_published_and_shard_folders(published, inputs):
    import inscene

    sample = next(iter(inscene.load(published.staged.out, "real", "train", backend="webdataset")))
    assert sample["png"].shape == (24, 32, 3) and sample["png"].dtype == np.uint8
    assert sample["record"].subset == "real"
    assert len(sample["references"]) == 1 and sample["references"][0]["image"].shape == (24, 32, 3)
    # straight from a pipeline's shard folder (refs subset in the same split)
    sample = next(iter(inscene.load(inputs[1], "real", "train", backend="webdataset")))
    assert sample["references"][0]["key"] == "ref0"
    with pytest.raises(InsceneError, match="not a folder or a Hub repo id"):
        inscene.load("/no/such/folder", "real", "train")
    with pytest.raises(InsceneError, match="from the Hub"):  # HF_HUB_OFFLINE=1 in the tests: a clear error
        inscene.load("nobody/no-such-dataset", "real", "train", backend="webdataset")


def test_demo_step_publishes_the_demo_dataset_and_loads_it_back(tmp_path):
    from pipelines.publish import demo_step

    root = tmp_path / "demo" / "dataset"
    samples = []
    for i in range(3):
        img = _png(70 + i)
        samples.append((f"photo{i}", {"png": img}, _meta(f"photo{i}", "train", "demo", img)))
    _write(root, "train", "demo", samples)
    summary = demo_step(root, tmp_path / "demo")
    assert summary["configs"] == ["demo"] and summary["samples"] == 3
    assert summary["hf_rows"] == summary["webdataset_rows"] == 3
    assert (summary["folder"] / "README.md").exists() and not summary["reused"]


def test_bad_inputs_are_named(tmp_path):
    from inscene.errors import BadInputError, ShardError

    make_real(tmp_path / "real")
    tar = tmp_path / "real" / "train" / "real-00000.tar"
    data = tar.read_bytes()
    # a truncated input shard: named, and nothing is left staged
    tar.write_bytes(data[: len(data) // 2])
    with pytest.raises(ShardError, match="real-00000.tar"):
        hub.publish([tmp_path / "real"], REPO, out=tmp_path / "repo", dry_run=True)
    assert not (tmp_path / "repo" / "data").exists()
    # a member whose bytes differ from the input manifest (same size, one byte flipped inside a member)
    import pyarrow.parquet as pq

    tar.write_bytes(data)
    table = pq.read_table(tar.with_suffix(".parquet")).to_pylist()
    table[0]["sha256_png"] = "0" * 64
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(table), tar.with_suffix(".parquet"))
    with pytest.raises(ShardError, match="real0: member png differs from its input manifest"):
        hub.publish([tmp_path / "real"], REPO, out=tmp_path / "repo", dry_run=True)
    # the same keys from two folders
    make_real(tmp_path / "real2")
    make_real(tmp_path / "real3")
    with pytest.raises(BadInputError, match="duplicate sample key"):
        hub.publish([tmp_path / "real2", tmp_path / "real3"], REPO, out=tmp_path / "repo3", dry_run=True)
    with pytest.raises(BadInputError, match="--check"):
        hub.publish([tmp_path / "real2"], REPO, out=tmp_path / "repo4", dry_run=True, check="sometimes")
    with pytest.raises(BadInputError, match="ORG/NAME"):
        hub.publish([tmp_path / "real2"], "no-slash", dry_run=True)
    with pytest.raises(BadInputError, match="no shards"):
        (tmp_path / "empty").mkdir()
        hub.publish([tmp_path / "empty"], REPO, out=tmp_path / "repo5", dry_run=True)


def test_privacy_gate_catches_location_metadata_fields(tmp_path):
    root = tmp_path / "syn"
    img = _png(3)
    _write(root, "train", "synthetic", [("s0", {"png": img}, _meta("s0", "train", "synthetic", img,
                                                                   gps_latitude=43.65, lens_serial=""))])
    _declare(root, synthetic={"license": "cc-by-4.0"})
    with pytest.raises(hub.PrivacyError) as err:
        hub.publish([root], REPO, out=tmp_path / "repo", dry_run=True)
    assert [p.line() for p in err.value.problems] == [
        "synthetic/train/s0: metadata field 'gps_latitude' looks like a location, serial number or owner"
    ]


def test_one_subset_from_two_folders_with_different_metadata_keys(tmp_path):
    import datasets

    for name, extra in (("a", {"musiq": 70.0}), ("b", {"lighting": "studio"})):
        img = _png(len(name) + ord(name))
        _write(tmp_path / name, "train", "synthetic",
               [(f"{name}0", {"png": img}, _meta(f"{name}0", "train", "synthetic", img, **extra))])
    decl = tmp_path / "decl.json"
    decl.write_text(json.dumps({"subsets": {"synthetic": {"license": "cc-by-4.0"}},
                                "columns": {"lighting": "Lighting the prompt asked for."}}))
    result = hub.publish([tmp_path / "a", tmp_path / "b"], REPO, out=tmp_path / "repo", dry_run=True,
                         declaration=decl)
    (g,) = result.staged.groups
    assert g.images == 2 and g.iqa == {"MUSIQ": [70.0, 1]} and {"musiq", "lighting"} <= set(g.meta_keys)
    ds = datasets.load_dataset(str(tmp_path / "repo"), name="synthetic", split="train",
                               cache_dir=str(tmp_path / "hf"))
    rows = {r["__key__"]: r["json"] for r in ds}
    assert rows["a0"]["musiq"] == 70.0 and rows["a0"]["lighting"] is None
    assert rows["b0"]["lighting"] == "studio" and rows["b0"]["musiq"] is None
