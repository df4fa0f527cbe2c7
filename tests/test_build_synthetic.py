"""`inscene build-synthetic` (§4.1, §6.1, Figures 4-5) as a user meets it.

Real reference photos: scikit-image's astronaut and three people cropped from insightface's group
photo (``t1.jpg``), two crops each; plus a folder without any face (and an unreadable file). The
identity filter runs with the embedded dlib embedder and its own threshold (0.92 cosine; ArcFace's
0.55 needs the antelopev2 pack). Generators: ``compose`` (offline, pastes the reference face into
a drawn scene), scripted test generators registered below, and InfiniteYou on tiny random weights.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import pytest
import skimage.data

from inscene import imageio
from inscene.errors import BadInputError
from pipelines.build_synthetic import (
    IdentityJournal,
    SyntheticOptions,
    discover_identities,
    generator_options,
    load_or_make_split,
    make_split,
    run_build_synthetic,
)
from pipelines.generators import Generator, register_generator
from pipelines.prompts import build_prompt, load_prompt_file, split_sentences

REPO = Path(__file__).resolve().parents[1]


# ---- fixtures ------------------------------------------------------------------------------------


def _t1() -> np.ndarray:
    spec = importlib.util.find_spec("insightface")
    path = Path(next(iter(spec.submodule_search_locations)), "data", "images", "t1.jpg")
    return imageio.decode_image(path.read_bytes())


@pytest.fixture(scope="module")
def photos():
    from inscene.faces import create_detector

    t1 = _t1()
    faces = sorted(create_detector("dlib").detect(t1), key=lambda f: f.box[0])
    people = []
    for f in faces[:3]:
        x1, y1, x2, y2 = f.box
        w = x2 - x1
        people.append([t1[int(max(0, y1 - m * w)):int(y2 + m * w), int(max(0, x1 - m * w)):int(x2 + m * w)]
                       for m in (0.6, 1.0)])
    return {"astronaut": skimage.data.astronaut(), "people": people}


@pytest.fixture(scope="module")
def ids_root(tmp_path_factory, photos):
    """CelebRef-HQ-like identity folders made of real photos."""
    root = tmp_path_factory.mktemp("identities")
    ast = photos["astronaut"]
    (root / "0001 astronaut").mkdir()  # a space: the key becomes 0001-astronaut, the File ID stays
    (root / "0001 astronaut" / "a.jpg").write_bytes(imageio.encode_image(ast, "jpeg", quality=92))
    (root / "0001 astronaut" / "b.png").write_bytes(imageio.encode_image(ast[20:300, 60:340], "png"))
    for i, crops in enumerate(photos["people"]):
        folder = root / f"00{10 + i}"
        folder.mkdir()
        for j, crop in enumerate(crops):
            (folder / f"r{j}.jpg").write_bytes(imageio.encode_image(crop, "jpeg", quality=95))
    (root / "0099").mkdir()
    (root / "0099" / "coffee.jpg").write_bytes(imageio.encode_image(skimage.data.coffee(), "jpeg", quality=90))
    (root / "0099" / "broken.jpg").write_bytes(b"not an image")
    return root


def _subset(root: Path, tmp: Path, names: list[str]) -> Path:
    out = tmp / "ids"
    out.mkdir()
    for n in names:
        os.symlink(root / n, out / n)
    return out


def _dlib(**kw) -> SyntheticOptions:
    base = dict(generator="compose", embedder="dlib", per_identity=2, max_attempts=3, val_identities=1,
                identities_per_partition=2)
    base.update(kw)
    return SyntheticOptions(**base)


def _shard_rows(out: Path, subset: str = "synthetic") -> pd.DataFrame:
    frames = [pd.read_parquet(p) for p in sorted((out / "dataset").glob(f"*/{subset}-*.parquet"))]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _attempts(out: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in sorted((out / "attempts").glob("*.parquet"))], ignore_index=True)


# ---- test generators -----------------------------------------------------------------------------


@dataclass
class ScriptedGenerator(Generator):
    """Returns the given image files in turn (what a generator would have made)."""

    name: ClassVar[str] = "scripted-test"
    images: tuple[str, ...] = ()
    _calls: int = field(default=0, init=False, repr=False)

    def condition(self, reference_rgb):
        return 1

    def generate(self, prompts, conditions, seeds):
        out = []
        for _ in prompts:
            out.append(imageio.decode_image(Path(self.images[self._calls % len(self.images)]).read_bytes()))
            self._calls += 1
        return out


@dataclass
class OomGenerator(Generator):
    """A compose generator whose n-th call runs out of GPU memory."""

    name: ClassVar[str] = "oom-test"
    oom_on_call: int = 1
    _calls: int = field(default=0, init=False, repr=False)

    def condition(self, reference_rgb):
        from pipelines.generators.compose import ComposeGenerator

        return ComposeGenerator().condition(reference_rgb)

    def generate(self, prompts, conditions, seeds):
        import torch

        from pipelines.generators.compose import ComposeGenerator

        self._calls += 1
        if self._calls - 1 == self.oom_on_call:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return ComposeGenerator().generate(prompts, conditions, seeds)


register_generator("scripted-test", ScriptedGenerator)
register_generator("oom-test", OomGenerator)


# ---- prompts -------------------------------------------------------------------------------------


def test_prompts_have_two_subject_and_two_background_sentences():
    scenes = set()
    for seed in range(200):
        p = build_prompt(seed)
        s = split_sentences(p.text)
        assert len(s) == 4, p.text
        assert "person" in s[0] and s[1].startswith("They ")
        assert s[2].startswith("The background is") and s[3].startswith("The scene is lit")
        assert p.tags[0] == p.choices["scene"]
        scenes.add(p.choices["scene"])
    assert build_prompt(5) == build_prompt(5) and build_prompt(5).text != build_prompt(6).text
    assert len(scenes) >= 15


def test_prompt_file_is_read_and_bad_lines_are_named(tmp_path):
    good = tmp_path / "p.jsonl"
    good.write_text('"A person in a park. They wave. The background is a park. Sharp."\n\n'
                    '{"prompt": "Only for 0010. Yes.", "identity": "0010", "tags": ["x"]}\n')
    pf = load_prompt_file(good)
    assert pf.choose("0010", 3).tags == ("x",)
    assert pf.choose("other", 3).tags == ("park",) and pf.choose("other", 3).source == "file:p.jsonl:1"
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"ok"\n{"prompt": ""}\n')
    with pytest.raises(BadInputError, match=r"bad.jsonl:2"):
        load_prompt_file(bad)
    bad.write_text('"ok"\n{oops\n')
    with pytest.raises(BadInputError, match=r"bad.jsonl:2: not JSON"):
        load_prompt_file(bad)


# ---- identities and split ------------------------------------------------------------------------


def test_identity_folders_keep_their_file_id(ids_root, tmp_path):
    found = {s.identity_id: s for s in discover_identities(ids_root)}
    assert set(found) == {"0001-astronaut", "0010", "0011", "0012", "0099"}
    assert found["0001-astronaut"].file_id == "0001 astronaut" and len(found["0001-astronaut"].files) == 2
    with pytest.raises(BadInputError, match="not a folder"):
        discover_identities(tmp_path / "missing")
    with pytest.raises(BadInputError, match="no identity folders"):
        discover_identities(tmp_path)


def test_split_is_identity_disjoint_seeded_and_written_once(tmp_path):
    ids = [f"{i:04d}" for i in range(1005)]
    split = make_split(ids, 100, seed=3)
    assert len(split["val"]) == 100 and len(split["train"]) == 905
    assert not set(split["val"]) & set(split["train"])
    assert make_split(ids, 100, seed=3) == split and make_split(ids, 100, seed=4) != split
    first = load_or_make_split(tmp_path, ids, 100, 3)
    assert load_or_make_split(tmp_path, list(reversed(ids)), 100, 3) == first
    with pytest.raises(BadInputError, match="val-identities"):
        load_or_make_split(tmp_path, ids, 50, 3)
    with pytest.raises(BadInputError, match="new identity"):
        load_or_make_split(tmp_path, [*ids, "extra"], 100, 3)
    with pytest.raises(BadInputError, match="only 3 identities"):
        make_split(["a", "b", "c"], 4, 0)


def test_cli_options_map_to_the_generator(tmp_path):
    opts = generator_options("infiniteyou", steps=4, resolution="512x768", lora=["antiblur-lora:1.2"], dtype="float32")
    assert opts == {"width": 512, "height": 768, "lora_specs": (("antiblur-lora", 1.2),), "steps": 4,
                    "dtype": "float32"}
    assert generator_options("infiniteyou", no_lora=True)["lora_specs"] == ()
    with pytest.raises(BadInputError, match="--steps does not apply to generator 'compose'"):
        generator_options("compose", steps=4)
    with pytest.raises(BadInputError, match="WIDTHxHEIGHT"):
        generator_options("compose", resolution="big")


# ---- the identity filter on real photos ----------------------------------------------------------


def test_filter_keeps_the_same_person_and_rejects_others_and_faceless(ids_root, photos, tmp_path):
    files = tmp_path / "made"
    files.mkdir()
    scripted = {
        "same.png": photos["astronaut"][0:260, 100:330],  # another crop of the reference person
        "other.png": photos["people"][0][1],  # someone else
        "noface.png": skimage.data.coffee(),
    }
    for name, img in scripted.items():
        (files / name).write_bytes(imageio.encode_image(img, "png"))
    root = _subset(ids_root, tmp_path, ["0001 astronaut"])
    options = SyntheticOptions(
        generator="scripted-test", generator_options={"images": tuple(str(files / n) for n in scripted)},
        embedder="dlib", per_identity=3, max_attempts=3, val_identities=0,
    )
    result = run_build_synthetic(root, tmp_path / "out", options)
    att = _attempts(tmp_path / "out").set_index("attempt")
    assert bool(att.loc[0, "accepted"]) and att.loc[0, "similarity"] >= 0.92  # dlib's own threshold
    assert not att.loc[1, "accepted"] and att.loc[1, "reason"].startswith("identity 0.")
    assert att.loc[1, "reason"].endswith("< 0.92 (dlib-resnet)") and att.loc[1, "similarity"] < 0.92
    assert not att.loc[2, "accepted"] and att.loc[2, "reason"] == "no face detected"
    assert set(att["embedder"]) == {"dlib-resnet"} and set(att["threshold"]) == {0.92}
    assert result.accepted == 1 and result.attempts == 3
    row = _shard_rows(tmp_path / "out").iloc[0]
    assert row["identity_embedder"] == "dlib-resnet" and row["identity_threshold"] == 0.92


# ---- end to end, resume after a kill ------------------------------------------------------------

_CRASH_SCRIPT = """
import json, os, sys
from pipelines.generators import register_generator
from pipelines.generators.compose import ComposeGenerator
from pipelines.build_synthetic import SyntheticOptions, run_build_synthetic

class Killed(ComposeGenerator):
    calls = 0
    def generate(self, prompts, conditions, seeds):
        Killed.calls += len(prompts)
        if Killed.calls > int(os.environ["KILL_AFTER"]):
            os._exit(17)  # no cleanup at all, as a SIGKILL or a node failure
        return super().generate(prompts, conditions, seeds)

register_generator("compose", Killed)
run_build_synthetic(sys.argv[1], sys.argv[2], SyntheticOptions(**json.loads(sys.argv[3])))
"""


@pytest.mark.slow
def test_end_to_end_and_resume_after_kill(ids_root, tmp_path):
    root = _subset(ids_root, tmp_path, ["0001 astronaut", "0010", "0011", "0099"])
    opts = dict(generator="compose", embedder="dlib", per_identity=2, max_attempts=3, val_identities=1,
                identities_per_partition=2)
    # an uninterrupted run
    clean = run_build_synthetic(root, tmp_path / "clean", SyntheticOptions(**opts))
    assert clean.ok and clean.accepted == 6
    # the same run killed during its fourth image, then resumed
    out = tmp_path / "killed"
    script = tmp_path / "kill.py"
    script.write_text(_CRASH_SCRIPT)
    env = dict(os.environ, KILL_AFTER="3", PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, str(script), str(root), str(out), json.dumps(opts)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 17, proc.stderr[-2000:]
    assert not (out / "dataset").exists()  # nothing committed: the first partition was in flight
    done_before = {i: len(IdentityJournal(out / "work" / i).records()) for i in ("0001-astronaut", "0010")}
    assert done_before == {"0001-astronaut": 2, "0010": 1}
    resumed = run_build_synthetic(root, out, SyntheticOptions(**opts))
    assert resumed.ok and resumed.accepted == 6
    # nothing regenerated: only the attempts that had not run
    this_run = resumed.summary.decisions.set_index("key")["m.attempts_this_run"].fillna(0)
    assert this_run.to_dict() == {"0001-astronaut": 0, "0010": 1, "0011": 2, "0099": 0}
    # same images, same keys, no duplicates, as the uninterrupted run
    a, b = _shard_rows(tmp_path / "clean"), _shard_rows(out)
    assert b["key"].is_unique and len(b) == 6
    assert dict(zip(a["key"], a["sha256_png"], strict=True)) == dict(zip(b["key"], b["sha256_png"], strict=True))
    att = _attempts(out)
    for _, group in att.groupby("identity_id"):
        assert sorted(group["attempt"]) == list(range(len(group)))  # attempts continue, none repeated
    assert att[["key", "seed", "prompt"]].equals(_attempts(tmp_path / "clean")[["key", "seed", "prompt"]])
    # a third run finds everything done and changes nothing
    before = {p: p.read_bytes() for p in (out / "dataset").rglob("*.tar")}
    again = run_build_synthetic(root, out, SyntheticOptions(**opts))
    assert again.summary.skipped_partitions == again.summary.partitions == 2
    assert {p: p.read_bytes() for p in (out / "dataset").rglob("*.tar")} == before
    # a shard lost after the run is rebuilt from the journals on the next run, without generating
    lost = sorted((out / "dataset").rglob("*.tar"))[0]
    for f in lost.parent.glob(lost.name.replace(".tar", ".*")):
        f.unlink()
    journals = {i: len(IdentityJournal(out / "work" / i).records()) for i in ("0001-astronaut", "0010", "0011", "0099")}
    import io

    from rich.console import Console

    from inscene import runtime

    printed = io.StringIO()
    saved, runtime.console = runtime.console, Console(file=printed, width=200)
    try:
        rebuilt = run_build_synthetic(root, out, SyntheticOptions(**opts))
    finally:
        runtime.console = saved
    assert rebuilt.summary.skipped_partitions == 1 and rebuilt.accepted == 6
    assert "this run 0 of 0 attempts" in printed.getvalue()  # the rebuild generated nothing
    assert {i: len(IdentityJournal(out / "work" / i).records()) for i in journals} == journals  # nothing generated
    assert {p: p.read_bytes() for p in (out / "dataset").rglob("*.tar")} == before
    _check_records(out)
    with pytest.raises(BadInputError, match="per_identity"):
        run_build_synthetic(root, out, SyntheticOptions(**(opts | {"per_identity": 3})))


def _check_records(out: Path) -> None:
    """Figure-5 records, identity shards, the split, the diversity report, loadable with HF datasets."""
    import datasets

    from inscene.schema import Sample
    from inscene.shards import hf_data_files, verify_dataset

    rows = _shard_rows(out)
    split = json.loads((out / "split.json").read_text())
    assert set(rows[rows["split"] == "val"]["identity_id"]) <= set(split["val"])
    assert set(rows[rows["split"] == "train"]["identity_id"]) <= set(split["train"])
    for meta in rows.to_dict("records"):
        rec = Sample.from_meta(meta)
        assert rec.prompt and len(split_sentences(rec.prompt)) == 4
        assert rec.faces and len(rec.faces[0].landmarks) == 5 and rec.faces[0].landmarks68
        assert rec.provenance.seed is not None and rec.width == 512 and rec.height == 640
        assert meta["file_id"] in {"0001 astronaut", "0010", "0011"}
        assert meta["identity_similarity"] >= 0.92 and meta["reference_key"].startswith(meta["identity_id"])
        assert json.loads(meta["generator_config"])["name"] == "compose" and json.loads(meta["tags"])
    refs = _shard_rows(out, "refs")
    assert set(refs["identity_id"]) == set(rows["identity_id"])  # references stored once per identity
    assert refs["key"].is_unique and (refs["file_id"] != "").all()
    assert verify_dataset(out / "dataset").ok
    ds = datasets.load_dataset("webdataset", data_files=hf_data_files(out / "dataset"), split="train",
                               cache_dir=str(out / ".hf-cache"))
    assert len(ds) == (rows["split"] == "train").sum() + (refs["split"] == "train").sum()
    tags = pd.read_csv(out / "diversity" / "tags.csv")
    assert tags["count"].sum() > 0 and (out / "diversity" / "wordcloud.png").stat().st_size > 1000
    ident = pd.read_parquet(out / "identities.parquet").set_index("identity_id")
    assert ident.loc["0099", "status"].startswith("references: no usable face in any of 2 references")


def test_out_of_memory_is_reported_per_identity_and_retried(ids_root, tmp_path):
    root = _subset(ids_root, tmp_path, ["0001 astronaut", "0010", "0011"])
    options = SyntheticOptions(generator="oom-test", generator_options={"oom_on_call": 1}, embedder="dlib",
                               per_identity=1, max_attempts=1, val_identities=0, identities_per_partition=3)
    first = run_build_synthetic(root, tmp_path / "out", options)
    ident = first.identities.set_index("identity_id")
    assert ident.loc["0010", "status"].startswith("generate: out of memory at attempt 0")
    assert first.ok and ident.loc["0001-astronaut", "accepted"] == 1 and ident.loc["0011", "accepted"] == 1
    again = run_build_synthetic(root, tmp_path / "out", options, retry_failed=True)
    assert again.accepted == 3 and (again.identities["status"] == "ok").all()


@pytest.mark.slow
def test_tiny_infiniteyou_end_to_end_on_cpu(ids_root, tmp_path):
    from pipelines.generators.tiny import make_tiny_infiniteyou

    tiny = make_tiny_infiniteyou(tmp_path / "weights")
    root = _subset(ids_root, tmp_path, ["0001 astronaut"])
    gen = {"width": 64, "height": 64, "steps": 2, "lora_specs": (), "id_detector": "dlib", "device": "cpu",
           "max_sequence_length": 64, "flux_path": str(tiny["flux"]), "infiniteyou_path": str(tiny["infiniteyou"]),
           "arcface_path": str(tiny["arcface"])}
    options = SyntheticOptions(generator="infiniteyou", generator_options=gen, embedder="dlib", per_identity=1,
                               max_attempts=2, val_identities=0, batch_size=2)
    result = run_build_synthetic(root, tmp_path / "out", options)
    att = _attempts(tmp_path / "out")
    # random weights draw noise: every attempt is logged and discarded for having no face
    assert result.ok and result.attempts == 2 and result.accepted == 0
    assert list(att["reason"]) == ["no face detected"] * 2 and att["seed"].is_unique
    assert set(att["generator"]) == {"infiniteyou"}
    run = json.loads((tmp_path / "out" / "run.json").read_text())
    assert run["frozen"]["generator_config"]["stage"] == "sim_stage1"


def test_cli_runs_offline_and_names_missing_weights(ids_root, tmp_path):
    root = _subset(ids_root, tmp_path, ["0010", "0099"])
    env = dict(os.environ, INSCENE_HOME=str(tmp_path / "home"), HF_HOME=str(tmp_path / "hf"),
               HF_HUB_CACHE=str(tmp_path / "hf" / "hub"), TORCH_HOME=str(tmp_path / "torch"))
    cmd = [sys.executable, "-m", "inscene", "build-synthetic", "--identities", str(root)]
    proc = subprocess.run([*cmd, "--out", str(tmp_path / "paper")], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "inscene weights fetch infiniteyou" in errors[0] and "Traceback" not in proc.stderr
    proc = subprocess.run([*cmd, "--out", str(tmp_path / "out"), "--generator", "compose", "--embedder", "dlib",
                           "--per-identity", "1", "--max-attempts", "1", "--val-identities", "1", "--in-process"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "images/hour" in proc.stderr and "inscene degrade" in proc.stdout
    assert len(list((tmp_path / "out" / "dataset").glob("*/synthetic-*.tar"))) == 1


# ---- scene diversity (Figure 4) ------------------------------------------------------------------


def _tiny_clip(folder: Path) -> Path:
    """A tiny random CLIP saved in the transformers layout of openai/clip-vit-large-patch14."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    from pipelines.generators.tiny import _tokenizers

    tok, _ = _tokenizers()
    torch.manual_seed(0)
    model = CLIPModel(CLIPConfig(
        text_config={"vocab_size": len(tok), "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 1,
                     "num_attention_heads": 2, "max_position_embeddings": 77, "bos_token_id": 0, "eos_token_id": 1,
                     "pad_token_id": 1},
        vision_config={"hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2,
                       "image_size": 32, "patch_size": 8},
        projection_dim=8,
    ))
    model.save_pretrained(folder)
    # as the Hub repo has them: preprocessor_config.json and the tokenizer files (no processor_config.json)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_clip_tagger_tags_images_from_the_scene_vocabulary(tmp_path, photos):
    from inscene.errors import MissingWeightsError
    from inscene.shards import ShardWriter
    from pipelines.prompts import scene_vocabulary
    from pipelines.scene_diversity import ClipTagger, diversity_report

    path = _tiny_clip(tmp_path / "clip")
    tagger = ClipTagger(path, top_k=3, device="cpu")
    tags = tagger.tags(photos["astronaut"])
    assert len(tags) == 3 and set(tags) <= set(scene_vocabulary()) and tagger.tags(photos["astronaut"]) == tags
    with ShardWriter(tmp_path / "ds", "val", "synthetic") as w:
        for i, img in enumerate((photos["astronaut"], skimage.data.coffee())):
            w.write(f"k{i}", {"png": imageio.encode_image(img, "png")}, {"tags": "[]"})
    report = diversity_report(tmp_path / "ds", tmp_path / "div", tagger="clip", path=path)
    assert report["tags"] == 2 * 5 and (tmp_path / "div" / "wordcloud.png").exists()
    with pytest.raises(MissingWeightsError, match="inscene weights fetch clip-vit-large-patch14"):
        ClipTagger(tmp_path / "nothing").load()
