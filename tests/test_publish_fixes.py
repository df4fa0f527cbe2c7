"""`inscene publish` with what the pipelines really write: develop-raw's pseudonymised test split,
build-synthetic's dataset beside its `inscene degrade` validation LQ, the card's description of the
recorded generator / filter, licences that differ per config, and the columns of a pseudonymised
filter-real run.

Inputs are made by the pipelines themselves (develop-raw on its generated demo DNGs; build-synthetic
with the offline ``compose`` generator and the embedded dlib embedder on scikit-image's astronaut;
degrade on its val split), published as dry runs (there is no Hub here).
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import skimage.data
from rich.console import Console
from typer.testing import CliRunner

from inscene import hub, imageio
from inscene.cli import app
from inscene.config import InsceneConfig
from inscene.errors import BadInputError, InsceneError
from inscene.shards import ShardReader
from pipelines.inputs import Pseudonymiser

SALT = b"develop-raw-test-salt-0123456789"
REPO = "inscene-org/inscene-fixes"
AGREED = "Everyone pictured agreed in writing to publication for research."
REAL = {"license": "cc-by-nc-4.0", "consent": AGREED, "pseudonymisation": "hmac-sha256"}


def _declaration(path: Path, **subsets: dict) -> Path:
    path.write_text(json.dumps({"format": "inscene-declaration/1", "subsets": subsets}))
    return path


# ---- develop-raw --pseudonymise -> publish ------------------------------------------------------------


def _all_text(folder: Path) -> str:
    """Everything a run wrote, as text: raw bytes of tars and JSON, parquet tables rendered."""
    parts = []
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        if f.suffix == ".parquet":
            parts.append(pd.read_parquet(f).astype(str).to_csv())
        else:
            parts.append(f.read_bytes().decode("latin-1"))
    return "\n".join(parts)


def test_develop_raw_pseudonymised_split_passes_the_publish_gate_and_loads(tmp_path):
    from pipelines.develop_raw import make_demo_inputs

    captures, refs = make_demo_inputs(tmp_path / "inputs")  # identity folder 'astronaut', files IMG_000N.dng
    salt_file = tmp_path / "salt"
    salt_file.write_bytes(SALT + b"\n")
    out = tmp_path / "test-real"
    res = CliRunner().invoke(app, ["develop-raw", str(captures), "--refs", str(refs), "--out", str(out),
                                   "--in-process", "--pseudonymise", "--salt-file", str(salt_file)])
    assert res.exit_code == 0, res.output

    # identity ids are filter-real's pseudonyms of the folder name; keys and sources name no file or folder
    pid = Pseudonymiser(SALT).identity("astronaut")
    samples = list(ShardReader(out, decode_images=False))
    assert len(samples) == 5  # 3 developed captures + 2 references
    for s in samples:
        assert s.meta["identity_id"] == pid
        assert s.meta["source"] == f"pseudonymised:{s.key}"
        assert s.key.startswith(("p", "ref-p"))
    written = _all_text(out)
    for secret in ("astronaut", "IMG_000", "gallery_0", str(tmp_path), SALT.decode()):
        assert secret not in written, secret  # shards, manifests, decision logs, run record
    assert "pseudonymised:" in written  # the truncated capture's decision row names only its pseudonym

    # publish: the privacy gate passes and every config loads
    decl = _declaration(tmp_path / "decl.json", **{"test-real": REAL, "identities": REAL})
    result = hub.publish([out], REPO, out=tmp_path / "hub", dry_run=True, declaration=decl, check="full")
    assert result.validation.ok, result.validation.problems
    assert result.validation.rows == {("test-real", "test"): 3, ("identities", "test"): 2}
    rows = list(hub.load(tmp_path / "hub", "test-real", "test", backend="webdataset"))
    assert len(rows) == 3 and all(len(r["references"]) == 2 for r in rows)  # joined by the pseudonym

    # a rerun with another salt is refused (its pseudonyms would not match the shards already written)
    with pytest.raises(BadInputError, match="different pseudonymisation salt"):
        from pipelines.develop_raw import run_develop_raw

        run_develop_raw(captures, refs, out, pseudonymise=True, salt=SALT[::-1], console=Console(quiet=True))


# ---- build-synthetic + its degraded val split -> publish ------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """A tiny build-synthetic run (compose generator, dlib embedder, 1 val identity) and its val LQ."""
    from pipelines.build_synthetic import SyntheticOptions, run_build_synthetic
    from pipelines.degrade import DegradeOptions, run_degrade

    base = tmp_path_factory.mktemp("synthetic")
    ids = base / "identities"
    photo = skimage.data.astronaut()
    for name, crop in (("0001", photo), ("0002", photo[10:300, 50:350])):
        (ids / name).mkdir(parents=True)
        (ids / name / "a.jpg").write_bytes(imageio.encode_image(crop, "jpeg", quality=92))
    options = SyntheticOptions(generator="compose", embedder="dlib", per_identity=1, max_attempts=2,
                               val_identities=1, identities_per_partition=2)
    run = run_build_synthetic(ids, base / "out", options, console=Console(quiet=True))
    assert run.ok and run.accepted == 2
    dataset = base / "out" / "dataset"
    val_lq = base / "out" / "val-lq"  # as build-synthetic's "next: val LQ" line says
    run_degrade(dataset, val_lq, DegradeOptions(versions=1), split="val", subset="synthetic",
                console=Console(quiet=True))
    decl = _declaration(base / "decl.json",
                        synthetic={"license": "other", "license_name": "flux-1-dev-non-commercial-license",
                                   "license_link": "https://example.org/flux-license"},
                        identities={"license": "cc-by-nc-4.0", "consent": "CelebRef-HQ research licence."})
    return {"base": base, "dataset": dataset, "val_lq": val_lq, "decl": decl}


@pytest.fixture(scope="module")
def synthetic_published(synthetic_run):
    r = synthetic_run
    return hub.publish([r["dataset"], r["val_lq"]], REPO, out=r["base"] / "hub", dry_run=True,
                       declaration=r["decl"], mapping=[f"{r['dataset']}:val/synthetic=-"], check="full")


def test_duplicate_keys_of_a_dataset_and_its_val_lq_name_the_map_that_resolves_them(synthetic_run, tmp_path):
    r = synthetic_run
    proc = subprocess.run(
        [sys.executable, "-m", "inscene", "publish", str(r["dataset"]), str(r["val_lq"]), "--repo-id", REPO,
         "--dry-run", "--out", str(tmp_path / "hub"), "--declaration", str(r["decl"])],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 2, proc.stderr
    err = " ".join(proc.stderr.split())  # rich wraps long lines
    assert "duplicate sample key" in err and "synthetic/val" in err
    # the copy without LQ (build-synthetic's own val split) is the one to leave out
    assert f"--map {r['dataset']}:val/synthetic=-" in err
    assert not (tmp_path / "hub" / "data").exists()  # refused before copying anything


def test_folder_qualified_map_leaves_one_folders_split_out(synthetic_published, synthetic_run):
    staged = synthetic_published.staged
    assert synthetic_published.validation.ok, synthetic_published.validation.problems
    assert {(g.subset, g.split): g.images for g in staged.groups} == {
        ("synthetic", "train"): 1, ("synthetic", "val"): 1, ("identities", "train"): 1, ("identities", "val"): 1}
    val, train = staged.group("synthetic", "val"), staged.group("synthetic", "train")
    assert {"hq.png", "lq0.png", "lq0.json"} <= set(val.members)  # the degraded copy, not the HQ-only one
    assert set(train.members) == {"png"}  # the dataset's train split still comes from dataset/
    # a plain SPLIT/SUBSET=- applies to every folder; a qualified entry naming no shards is an error
    assert hub.parse_mapping(["val/synthetic=-"]) == {"val/synthetic": None}
    with pytest.raises(BadInputError, match="has no test/real-\\*.tar shards"):
        hub.publish([synthetic_run["dataset"]], REPO, out=synthetic_run["base"] / "hub-bad", dry_run=True,
                    declaration=synthetic_run["decl"], mapping=[f"{synthetic_run['dataset']}:test/real=-"])
    with pytest.raises(BadInputError, match="is not one of the input folders"):
        hub.publish([synthetic_run["dataset"]], REPO, out=synthetic_run["base"] / "hub-bad", dry_run=True,
                    declaration=synthetic_run["decl"], mapping=[f"{synthetic_run['val_lq']}:val/synthetic=-"])
    with pytest.raises(BadInputError, match=r"\[DIR:\]SPLIT/SUBSET=CONFIG/SPLIT"):
        hub.parse_mapping([":val/synthetic=-"])


def test_card_describes_the_recorded_generator_filter_and_validation_identities(synthetic_published):
    from huggingface_hub import DatasetCard

    text = DatasetCard.load(synthetic_published.staged.out / "README.md").text
    subset_row = next(line for line in text.splitlines() if line.startswith("| `synthetic` |"))
    assert "generated by `compose`" in subset_row and "`dlib-resnet`" in subset_row and ">= 0.92" in subset_row
    construction = text.split("## Construction", 1)[1].split("*The paper's synthetic subset", 1)[0]
    assert "generated by `compose`" in construction and "reached 0.92" in construction
    assert "1 identity (1 image) in `val`" in construction and "offline stand-in" in construction
    assert "InfiniteYou" not in construction and "0.55" not in construction  # not claimed for this copy
    assert "*The paper's synthetic subset, for reference (not this copy's settings):* InfiniteYou" in text
    assert "`build-synthetic run.json`" in text and "generator=compose" in text  # found beside dataset/
    assert "(not documented by the publisher)" not in text and synthetic_published.undocumented == []
    for column in ("file_id", "identity_similarity_mean", "generator_config", "loras", "tags", "usable"):
        assert f"`json.{column}`" in text


def test_licence_metadata_is_right_for_every_config(synthetic_published):
    staged = synthetic_published.staged
    # synthetic: other (FLUX non-commercial), identities: cc-by-nc-4.0 -> `other` pointing at the card's table
    data = hub.card_data(staged).to_dict()
    assert (data["license"], data["license_name"], data["license_link"]) == (
        "other", hub.PER_CONFIG_LICENSE, "README.md")
    text = hub.build_card(staged, REPO)
    assert "| `synthetic` | other: flux-1-dev-non-commercial-license (https://example.org/flux-license) |" in text
    assert "| `identities` | cc-by-nc-4.0 |" in text and "different licences" in text

    def declared(**subsets):
        return dataclasses.replace(staged, declaration=hub.Declaration(subsets=subsets)).declaration

    # two different `other` licences: neither config's name may label the whole repo
    two_others = dataclasses.replace(staged, declaration=declared(
        synthetic={"license": "other", "license_name": "flux-1-dev-non-commercial-license"},
        identities={"license": "other", "license_name": "celebref-hq-research"}))
    data = hub.card_data(two_others).to_dict()
    assert (data["license"], data["license_name"]) == ("other", hub.PER_CONFIG_LICENSE)
    # one licence for every config: declared as is
    same = {"license": "other", "license_name": "flux-1-dev-non-commercial-license", "license_link": "LICENSE.md"}
    one = dataclasses.replace(staged, declaration=declared(synthetic=same, identities=same))
    data = hub.card_data(one).to_dict()
    assert (data["license"], data["license_name"], data["license_link"]) == (
        "other", "flux-1-dev-non-commercial-license", "LICENSE.md")
    assert "different licences" not in hub.build_card(one, REPO)


# ---- filter-real --pseudonymise -> publish: the card documents every column it writes ---------------------


def _card_row(text: str, column: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| `json.{column}` |"))


def test_card_documents_every_column_filter_real_writes(tmp_path):
    from pipelines.filter_real import PAPER_IQA, EncodeStage, FilterOptions, Thresholds, run_filter_real

    astro = skimage.data.astronaut()
    (tmp_path / "gallery" / "Jane_Doe").mkdir(parents=True)
    (tmp_path / "gallery" / "Jane_Doe" / "a.png").write_bytes(imageio.encode_image(astro, "png"))
    (tmp_path / "refs" / "Jane_Doe").mkdir(parents=True)
    (tmp_path / "refs" / "Jane_Doe" / "r.png").write_bytes(imageio.encode_image(astro[40:300, 100:360], "png"))
    # the shipped photo is 512 px: lowered --min-side, 512 px crop, embedded dlib detector and PIQE Stage 3
    options = FilterOptions(thresholds=Thresholds.for_profile("gallery", min_short_side=256), detector="dlib",
                            iqa="piqe", pseudonymise=True)
    run = run_filter_real([tmp_path / "gallery"], tmp_path / "run", options, refs=tmp_path / "refs", salt=SALT,
                          config=InsceneConfig(real_filter={"crop_size": 512}))
    assert run.summary.accepted == 1 and run.refs is not None and run.refs.accepted == 1
    written = next(iter(ShardReader(run.out / "dataset", subset="real", decode_images=False))).meta
    assert {"caption", "url", "crop_box", "face_area_fraction", "blur_face", "blur_image", "iqa", "piqe",
            "short_side", "orig_width", "filter_profile"} <= set(written)

    decl = _declaration(tmp_path / "decl.json", real=REAL, identities=REAL)
    result = hub.publish([run.out / "dataset"], REPO, out=tmp_path / "hub", dry_run=True, declaration=decl,
                         check="full")
    assert result.validation.ok, result.validation.problems
    text = (tmp_path / "hub" / "README.md").read_text()
    assert "(not documented by the publisher)" not in text and result.undocumented == []
    for column in written:
        assert f"`json.{column}`" in text, column
    # units, the paper's section and threshold, and the backend that produced the score
    assert "0-1, not %" in _card_row(text, "face_area_fraction") and "§6.2 keeps >= 0.01" in _card_row(
        text, "face_area_fraction")
    assert "§6.2 keeps >= 1000 px" in _card_row(text, "short_side") and "§4.1 >= 1024 px" in _card_row(
        text, "short_side")
    assert "variance of the Laplacian" in _card_row(text, "blur_face") and "no threshold" in _card_row(
        text, "blur_face")
    piqe = _card_row(text, "piqe")
    assert "lower is better" in piqe and "pyiqa's weight-free PIQE" in piqe and "not in the paper" in piqe
    assert "resized to min(H, W)" in _card_row(text, "crop_box")
    assert "'pseudonymised:<key>'" in _card_row(text, "source")
    # the Construction section states what this run applied, from its run.json, not the paper's defaults
    construction = text.split("## Construction", 1)[1]
    assert "shorter side >= 256 px (gallery)" in construction and "min(H, W) = 512" in construction
    assert "PIQE <= 50" in construction and "NOT the paper's" in construction and "MUSIQ >=" not in construction
    assert "Thresholds as recorded: filter-real's run.json" in construction

    # with the paper's IQA (no weights here), the columns filter-real writes are documented too, by backend
    stage = EncodeStage(subset="real", iqa_metrics=PAPER_IQA)
    measured = {**{k[2:]: v for k, v in run.summary.decisions.iloc[0].items() if k.startswith("m.")},
                "iqa": "paper", "musiq": 70.0, "clipiqa": 0.7, "maniqa": 0.5}
    meta = stage.meta(written["key"], written["source"], measured, {}, {}, (512, 512, 3))
    assert {"musiq", "clipiqa", "maniqa"} <= set(meta)
    assert [k for k in meta if hub._meta_doc(k, hub.Declaration()) is None] == []
    assert "pyiqa's musiq" in hub._meta_doc("musiq", hub.Declaration())
    assert ">= 0.65" in hub._meta_doc("clipiqa", hub.Declaration())


# ---- the card's privacy statement is true of the published identity ids ----------------------------------


def _privacy(text: str) -> str:
    return text.split("## Licences, consent and privacy", 1)[1].split("## Integrity", 1)[0]


def _licence_row(text: str, config: str) -> list[str]:
    line = next(line for line in _privacy(text).splitlines() if line.startswith(f"| `{config}` | "))
    return [cell.strip() for cell in line.strip("|").split("|")]


def test_card_claims_no_pseudonyms_for_build_synthetic_ids_even_when_declared(synthetic_run):
    r = synthetic_run
    decl = _declaration(r["base"] / "decl-hmac.json",
                        synthetic={"license": "other", "license_name": "flux-1-dev-non-commercial-license"},
                        identities={"license": "cc-by-nc-4.0", "consent": "CelebRef-HQ research licence.",
                                    "pseudonymisation": "hmac-sha256"})
    result = hub.publish([r["dataset"]], REPO, out=r["base"] / "hub-hmac", dry_run=True, declaration=decl)
    text = (r["base"] / "hub-hmac" / "README.md").read_text()
    published = {i for g in result.staged.groups if g.subset == "identities" for i in g.identity_ids}
    assert published == {"0001", "0002"}  # build-synthetic's File IDs, not pseudonyms
    privacy = _privacy(text)
    assert "HMAC-SHA256" not in privacy and "hmac-sha256" not in privacy
    assert _licence_row(text, "identities")[4] == "source-dataset ids (not pseudonyms)"
    assert _licence_row(text, "synthetic")[4] == "source-dataset ids (not pseudonyms)"
    assert "ids of the source identity dataset the synthetic scenes were made from" in privacy
    assert "in `synthetic`, `identities`" in privacy


def test_card_claims_pseudonyms_only_for_the_ids_that_are(synthetic_run, tmp_path):
    staged = hub.publish([synthetic_run["dataset"]], REPO, out=tmp_path / "hub", dry_run=True,
                         declaration=synthetic_run["decl"]).staged
    pid = Pseudonymiser(SALT).identity("Jane_Doe")
    real = hub.GroupStats("real", "test", identity_ids=[pid])
    ident = next(g for g in staged.groups if g.subset == "identities")
    mixed = dataclasses.replace(ident, identity_ids=[*ident.identity_ids, pid])
    decl = staged.declaration.model_copy(update={"subsets": {
        **staged.declaration.subsets, "real": hub.SubsetDeclaration(**REAL),
        "identities": hub.SubsetDeclaration(**REAL)}})
    groups = [*(g for g in staged.groups if g is not ident), mixed, real]
    features = {**staged.features, "real": staged.features["identities"]}
    text = hub.build_card(dataclasses.replace(staged, groups=groups, declaration=decl, features=features), REPO)
    assert _licence_row(text, "real")[4] == "hmac-sha256 pseudonyms"
    assert _licence_row(text, "identities")[4] == (
        "1 hmac-sha256 pseudonyms, 2 source-dataset ids (only the `id-` ones are pseudonyms)")
    privacy = _privacy(text)
    assert "(in `identities`, `real`) are HMAC-SHA256 pseudonyms" in privacy


# ---- inscene.load(..., "identities", ...): build-synthetic's reference rows carry their Identity ------------


@pytest.mark.parametrize("backend", ["hf", "webdataset"])
def test_loaded_identity_reference_rows_carry_their_identity_record(synthetic_published, backend):
    import inscene
    from inscene.schema import Identity

    rows = inscene.load(synthetic_published.staged.out, "identities", "train", backend=backend)
    rows = list(rows) if backend == "webdataset" else [rows[i] for i in range(len(rows))]
    assert rows
    for row in rows:
        record, meta = row["record"], row["json"]
        assert isinstance(record, Identity), meta
        assert record.identity_id == meta["identity_id"] and record.source_id == meta["file_id"]
        assert row["__key__"] in record.references and record.split == "train"


def test_metadata_that_is_neither_a_sample_nor_an_identity_has_no_record():
    assert hub._record({"key": "a", "identity_id": "x", "identity": "not json"}) is None
    assert hub._record({"key": "a"}) is None and hub._record(None) is None


# ---- a failed or killed publish: the previous --out stays, no working folder outside --out's parent ---------


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_failed_publish_leaves_the_previous_output_intact(tmp_path, monkeypatch):
    from tests.test_hub import make_real

    make_real(tmp_path / "good")
    out = tmp_path / "pub2"
    first = hub.publish([tmp_path / "good"], REPO, out=out, dry_run=True, check="stream")
    assert first.validation.ok and first.staged.out == out
    before = _snapshot(out)
    assert any(name.endswith(".tar") for name in before)

    # the privacy gate refuses while staging (a GPS tag in the second sample)
    make_real(tmp_path / "bad", gps_key="real1")
    with pytest.raises(hub.PrivacyError):
        hub.publish([tmp_path / "bad"], REPO, out=out, dry_run=True, check="stream")
    assert _snapshot(out) == before

    # validation fails after staging
    failed = hub.ValidationReport(mode="stream", problems=["real/train: planted failure"])
    monkeypatch.setattr(hub, "validate_folder", lambda *a, **k: failed)
    with pytest.raises(InsceneError, match="planted failure"):
        hub.publish([tmp_path / "bad"], REPO, out=out,
                    dry_run=True, mapping=["train/real=-"], check="stream")
    assert _snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad", "good", "pub2"]  # no working folder left
    monkeypatch.undo()
    assert hub.publish([tmp_path / "good"], REPO, out=out, dry_run=True, check="stream").reused


def test_validation_cache_lives_beside_out_and_a_killed_runs_leftovers_are_removed(tmp_path, monkeypatch):
    import tempfile

    import datasets

    from tests.test_hub import make_real

    make_real(tmp_path / "good")
    out = tmp_path / "work" / "pub"
    out.parent.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    for tag in ("tmp", "hf-check"):  # what a publish killed mid-run leaves
        (out.parent / f".pub.{tag}-{dead.pid}" / "junk").mkdir(parents=True)
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    caches: list[Path] = []
    real_load = datasets.load_dataset

    def load(*args, **kwargs):
        caches.append(Path(kwargs["cache_dir"]))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", load)
    result = hub.publish([tmp_path / "good"], REPO, out=out, dry_run=True, check="full")
    assert result.validation.ok and caches
    assert all(c.parent == out.parent for c in caches)  # never in the system temp folder
    assert not any(system_tmp.iterdir())
    assert sorted(p.name for p in out.parent.iterdir()) == ["pub"]  # leftovers removed, own cache too
