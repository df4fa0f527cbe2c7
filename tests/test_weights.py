"""Tests for inscene.weights: the model table, lookup, status and (offline-safe) fetch.

Every cache location (INSCENE_HOME, HF_HOME, TORCH_HOME, INSIGHTFACE_HOME, HOME) points into
tmp_path, and HF_HUB_OFFLINE=1 unless a test replaces the network functions itself. Weights are
empty placeholder files in the real on-disk layouts; nothing is downloaded.
"""

from __future__ import annotations

import io
import os
import sys
import zipfile
from pathlib import Path

import huggingface_hub
import huggingface_hub.constants as hf_constants
import pytest
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError
from rich.console import Console

from inscene import weights
from inscene.errors import BadInputError, InsceneError, MissingWeightsError
from inscene.weights import (
    MODELS,
    WeightsOfflineError,
    fetch,
    format_status,
    locate,
    search_paths,
    status,
)


@pytest.fixture(autouse=True)
def homes(monkeypatch, tmp_path):
    dirs = {
        "INSCENE_HOME": tmp_path / "inscene",
        "HF_HOME": tmp_path / "hf",
        "TORCH_HOME": tmp_path / "torch",
        "INSIGHTFACE_HOME": tmp_path / "insightface",
        "HOME": tmp_path / "home",
    }
    for key, value in dirs.items():
        monkeypatch.setenv(key, str(value))
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(key, raising=False)
    for key in list(os.environ):
        if key.startswith("INSCENE_WEIGHTS_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub froze its cache path at import; point it into tmp_path as well.
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    return dirs


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", refuse)
    monkeypatch.setattr(weights.urllib.request, "urlopen", refuse)


def _touch(root: Path, files) -> None:
    for rel in files:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"")


def _snapshot(hub: Path, repo: str, rev: str, files, main: bool = True) -> Path:
    base = hub / ("models--" + repo.replace("/", "--"))
    snap = base / "snapshots" / rev
    _touch(snap, files)
    if main:
        (base / "refs").mkdir(parents=True, exist_ok=True)
        (base / "refs" / "main").write_text(rev)
    return snap


# --- the table -------------------------------------------------------------------------------


def test_table_is_consistent():
    required = {
        "dlib-hog", "dlib-mmod", "dlib-shape68", "dlib-shape5", "dlib-resnet",
        "antelopev2", "buffalo_l", "yolov8n-face",
        "musiq", "clipiqa", "maniqa", "liqe", "topiq_nr", "lpips", "dists", "fid",
        "psnr", "ssim", "piqe", "niqe",
        "sd-turbo", "flux1-dev", "infiniteyou", "antiblur-lora", "faceme",
    }  # fmt: skip
    assert required <= set(MODELS)
    for name, spec in MODELS.items():
        assert spec.name == name
        assert spec.license and spec.paper_ref and spec.fetch and spec.source
        assert all(r in MODELS for r in spec.requires)
        assert all(other in MODELS for other, _ in spec.also_in)
        if spec.embedded:
            assert spec.layout == "package"
        elif spec.layout == "hf":
            assert spec.hf_repo and spec.source == f"hf:{spec.hf_repo}"
        elif spec.layout in ("torch_hub", "file"):
            assert {rel for rel, _ in spec.downloads} == set(spec.files)
        elif spec.layout == "insightface":
            assert spec.archive_url and spec.archive_url.endswith(f"/{name}.zip")
    assert MODELS["psnr"].embedded and not MODELS["musiq"].embedded
    assert not MODELS["niqe"].embedded  # pyiqa downloads its .mat parameter file
    assert MODELS["yolov8n-face"].env_var == "INSCENE_WEIGHTS_YOLOV8N_FACE"


def test_unknown_name_lists_known_ones():
    with pytest.raises(BadInputError) as info:
        locate("antelope")
    assert "antelopev2" in str(info.value) and "sd-turbo" in str(info.value)
    with pytest.raises(BadInputError):
        status(["nope"])


# --- embedded dlib models ----------------------------------------------------------------------


def test_dlib_models_come_from_the_installed_package():
    was_imported = "face_recognition_models" in sys.modules
    for name in ("dlib-mmod", "dlib-shape68", "dlib-shape5", "dlib-resnet"):
        found = locate(name)
        assert found.is_file() and found.stat().st_size > 0
        assert found.name == MODELS[name].files[0]
        assert found.parent.name == "models"
        assert found.parent.parent.name == "face_recognition_models"
    assert locate("dlib-hog").is_dir()
    # Located without importing it (its __init__ needs pkg_resources).
    assert ("face_recognition_models" in sys.modules) == was_imported


def test_missing_package_names_pip_install(monkeypatch):
    monkeypatch.setattr(weights, "_package_dir", lambda name: None)
    with pytest.raises(MissingWeightsError) as info:
        locate("dlib-shape68")
    assert "face_recognition_models" in str(info.value)
    assert "pip install face-recognition-models" in str(info.value)


# --- lookup ------------------------------------------------------------------------------------


def test_missing_antelopev2_names_file_places_and_command(homes):
    with pytest.raises(MissingWeightsError) as info:
        locate("antelopev2")
    err = info.value
    msg = str(err)
    assert err.exit_code == 2 and "\n" not in msg
    assert err.filename == "scrfd_10g_bnkps.onnx" and "scrfd_10g_bnkps.onnx" in msg
    assert "inscene weights fetch antelopev2" in msg
    inscene_pack = homes["INSCENE_HOME"] / "insightface" / "models" / "antelopev2"
    for place in (
        inscene_pack,
        homes["INSIGHTFACE_HOME"] / "models" / "antelopev2",
        homes["HOME"] / ".insightface" / "models" / "antelopev2",
    ):
        assert str(place) in err.searched and str(place) in msg
    assert err.searched[0] == str(inscene_pack)
    assert any("models--ByteDance--InfiniteYou/snapshots" in s for s in err.searched)


def test_placeholder_files_under_inscene_home_are_found(homes):
    home = homes["INSCENE_HOME"]
    pack = home / "insightface" / "models" / "antelopev2"
    _touch(pack, MODELS["antelopev2"].files)
    assert locate("antelopev2") == pack

    _touch(home / "torch" / "hub", MODELS["musiq"].files)
    assert locate("musiq") == home / "torch" / "hub"

    _touch(home / "yolov8n-face", ["yolov8n-face.pt"])
    assert locate("yolov8n-face") == home / "yolov8n-face" / "yolov8n-face.pt"
    assert weights.locate_file("musiq") == home / "torch/hub/pyiqa/musiq_koniq_ckpt-e95806b9.pth"

    _touch(home / "sd-turbo", MODELS["sd-turbo"].files)  # a hand-copied diffusers folder
    assert locate("sd-turbo") == home / "sd-turbo"


def test_partial_download_names_the_first_missing_file(homes):
    root = homes["INSCENE_HOME"] / "sd-turbo"
    _touch(root, [f for f in MODELS["sd-turbo"].files if "unet/" not in f])
    with pytest.raises(MissingWeightsError) as info:
        locate("sd-turbo")
    assert info.value.filename == "unet/config.json"


def test_nested_insightface_zip_layout_is_accepted(homes):
    nested = homes["HOME"] / ".insightface" / "models" / "buffalo_l" / "buffalo_l"
    _touch(nested, MODELS["buffalo_l"].files)
    assert locate("buffalo_l") == nested


def test_hf_cache_snapshot_is_found(homes):
    hub = homes["HF_HOME"] / "hub"
    files = MODELS["sd-turbo"].files
    _snapshot(hub, "stabilityai/sd-turbo", "0000old", files, main=False)
    current = _snapshot(hub, "stabilityai/sd-turbo", "fff1new", files)
    assert locate("sd-turbo") == current  # refs/main wins over sort order


def test_inscene_home_hub_layout_wins_over_the_hf_cache(homes):
    files = MODELS["sd-turbo"].files
    _snapshot(homes["HF_HOME"] / "hub", "stabilityai/sd-turbo", "aaa", files)
    mine = _snapshot(homes["INSCENE_HOME"] / "hub", "stabilityai/sd-turbo", "bbb", files)
    assert locate("sd-turbo") == mine


def test_antelopev2_is_found_inside_an_infiniteyou_snapshot(homes):
    sub = "supports/insightface/models/antelopev2"
    snap = _snapshot(
        homes["HF_HOME"] / "hub",
        "ByteDance/InfiniteYou",
        "abc",
        [f"{sub}/{f}" for f in MODELS["antelopev2"].files],
    )
    assert locate("antelopev2") == snap / sub


def test_requirements_are_checked(homes):
    _touch(homes["INSCENE_HOME"] / "torch" / "hub", MODELS["maniqa"].files)
    assert locate("maniqa", check_requires=False) == homes["INSCENE_HOME"] / "torch" / "hub"
    with pytest.raises(MissingWeightsError) as info:
        locate("maniqa")
    msg = str(info.value)
    assert "timm-vit-base-patch8-224 (needed by maniqa)" in msg
    assert "models--timm--vit_base_patch8_224.augreg2_in21k_ft_in1k" in msg
    _snapshot(
        homes["HF_HOME"] / "hub",
        "timm/vit_base_patch8_224.augreg2_in21k_ft_in1k",
        "r1",
        ["model.safetensors"],
    )
    assert locate("maniqa") == homes["INSCENE_HOME"] / "torch" / "hub"


def test_explicit_path_is_the_only_place_searched(homes, monkeypatch, tmp_path):
    _touch(homes["INSCENE_HOME"] / "yolov8n-face", ["yolov8n-face.pt"])
    own = tmp_path / "mine" / "face.pt"
    _touch(own.parent, ["face.pt"])
    monkeypatch.setenv("INSCENE_WEIGHTS_YOLOV8N_FACE", str(own))
    assert locate("yolov8n-face") == own
    flat = tmp_path / "flat"
    _touch(flat, ["musiq_koniq_ckpt-e95806b9.pth"])
    assert locate("musiq", path=flat) == flat / "musiq_koniq_ckpt-e95806b9.pth"
    wrong = tmp_path / "wrong"
    monkeypatch.setenv("INSCENE_WEIGHTS_YOLOV8N_FACE", str(wrong))
    assert search_paths("yolov8n-face") == [wrong]
    with pytest.raises(MissingWeightsError) as info:
        locate("yolov8n-face")
    assert info.value.searched == [str(wrong)]


def test_faceme_is_a_user_folder(homes, tmp_path):
    with pytest.raises(MissingWeightsError) as info:
        locate("faceme")
    assert "INSCENE_WEIGHTS_FACEME" in str(info.value)
    ckpt = tmp_path / "FaceMe"
    _touch(ckpt, ["inference.py", "ckpt/model.pth"])
    assert locate("faceme", path=ckpt) == ckpt


# --- status ------------------------------------------------------------------------------------


def test_status_rows_and_table(homes):
    _touch(homes["INSCENE_HOME"] / "insightface" / "models" / "buffalo_l", ["det_10g.onnx", "w600k_r50.onnx"])
    rows = {r.name: r for r in status()}
    assert set(rows) == set(MODELS)
    assert rows["dlib-shape68"].found and rows["dlib-shape68"].embedded
    assert rows["buffalo_l"].found and not rows["buffalo_l"].embedded
    miss = rows["antelopev2"]
    assert not miss.found and miss.missing == "scrfd_10g_bnkps.onnx"
    assert miss.fetch == "inscene weights fetch antelopev2" and miss.searched
    buf = io.StringIO()
    Console(file=buf, width=240, color_system=None).print(format_status(list(rows.values())))
    text = buf.getvalue()
    assert "antelopev2" in text and "missing" in text and "embedded" in text
    assert "inscene weights fetch antelopev2" in text
    # a missing model says where it was looked for
    assert "looked in:" in text and "insightface/models/antelopev2" in text


# --- fetch -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sd-turbo", "antelopev2", "musiq", "yolov8n-face"])
def test_fetch_offline_is_a_clear_error_without_network(homes, no_network, name):
    with pytest.raises(WeightsOfflineError) as info:
        fetch([name], console=Console(file=io.StringIO()))
    msg = str(info.value)
    assert "HF_HUB_OFFLINE" in msg and "machine with internet" in msg
    assert f"inscene weights fetch {name}" in msg
    assert str(homes["INSCENE_HOME"]) in msg
    assert isinstance(info.value, InsceneError) and info.value.exit_code == 2


def test_fetch_connection_failure_is_the_offline_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    def unreachable(*args, **kwargs):
        raise LocalEntryNotFoundError("cannot reach the Hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    with pytest.raises(WeightsOfflineError, match="no connection"):
        fetch(["sd-turbo"], console=Console(file=io.StringIO()))


def test_fetch_gated_repo_explains_access(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    def gated(*args, **kwargs):
        # GatedRepoError needs an HTTP response to construct; build it bare at this boundary.
        exc = GatedRepoError.__new__(GatedRepoError)
        Exception.__init__(exc, "401 gated")
        raise exc

    monkeypatch.setattr(huggingface_hub, "snapshot_download", gated)
    with pytest.raises(InsceneError, match="gated repo") as info:
        fetch(["flux1-dev"], with_requires=False, console=Console(file=io.StringIO()))
    assert "huggingface.co/black-forest-labs/FLUX.1-dev" in str(info.value)


def test_fetch_hf_snapshot_into_inscene_home(homes, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    calls = []

    def fake_snapshot(repo_id, *, allow_patterns, ignore_patterns, cache_dir, **kw):
        calls.append((repo_id, allow_patterns, ignore_patterns, Path(cache_dir)))
        return str(_snapshot(Path(cache_dir), repo_id, "rev1", MODELS["sd-turbo"].files))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    con = Console(file=io.StringIO())
    out = fetch(["sd-turbo"], console=con)
    repo, allow, ignore, cache = calls[0]
    assert repo == "stabilityai/sd-turbo" and cache == homes["INSCENE_HOME"] / "hub"
    assert "unet/*" in allow and "sd_turbo.safetensors" not in allow and ignore == ["*.fp16.*"]
    assert out["sd-turbo"] == locate("sd-turbo")
    fetch(["sd-turbo"], console=con)  # already there: no second download
    assert len(calls) == 1


def test_fetch_reports_upstream_layout_changes(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")

    def fake_snapshot(repo_id, *, cache_dir, **kw):
        return str(_snapshot(Path(cache_dir), repo_id, "rev1", ["model_index.json"]))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    with pytest.raises(InsceneError, match="upstream layout differs"):
        fetch(["sd-turbo"], console=Console(file=io.StringIO()))


def test_fetch_insightface_zip_is_flattened(homes, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    urls = []

    def fake_download(url, target):
        urls.append(url)
        with zipfile.ZipFile(target, "w") as zf:
            for f in ("scrfd_10g_bnkps.onnx", "glintr100.onnx", "genderage.onnx"):
                zf.writestr(f"antelopev2/{f}", b"onnx")

    monkeypatch.setattr(weights, "_download_url", fake_download)
    out = fetch(["antelopev2"], console=Console(file=io.StringIO()))
    pack = homes["INSCENE_HOME"] / "insightface" / "models" / "antelopev2"
    assert out["antelopev2"] == pack == locate("antelopev2")
    assert (pack / "genderage.onnx").is_file()
    assert urls == ["https://github.com/deepinsight/insightface/releases/download/model-zoo/antelopev2.zip"]


def test_fetch_pyiqa_files_into_the_torch_hub_layout(homes, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    got = []

    def fake_hf(repo_id, filename, *, local_dir, **kw):
        got.append((repo_id, filename))
        p = Path(local_dir) / filename
        p.write_bytes(b"w")
        return str(p)

    def fake_url(url, target):
        got.append(url)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(b"w")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_hf)
    monkeypatch.setattr(weights, "_download_url", fake_url)
    out = fetch(["lpips"], console=Console(file=io.StringIO()))
    hub = homes["INSCENE_HOME"] / "torch" / "hub"
    assert out["lpips"] == hub == locate("lpips")
    assert ("chaofengc/IQA-PyTorch-Weights", "LPIPS_v0.1_alex-df73285e.pth") in got
    assert "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth" in got
    assert (hub / "checkpoints" / "alexnet-owt-7be5be79.pth").is_file()


def test_fetch_follows_requirements(monkeypatch, no_network):
    seen = []
    monkeypatch.setattr(weights, "_offline", lambda: False)
    monkeypatch.setattr(weights, "_fetch_one", lambda spec, dest: seen.append(spec.name) or dest)
    fetch(["infiniteyou"], console=Console(file=io.StringIO()))
    assert seen == ["infiniteyou", "flux1-dev", "antelopev2", "facexlib-arcface"]


def test_fetch_embedded_and_user_models(no_network):
    out = fetch(["dlib-shape5"], console=Console(file=io.StringIO()))
    assert out["dlib-shape5"].is_file()
    with pytest.raises(BadInputError, match="cannot be downloaded"):
        fetch(["faceme"], console=Console(file=io.StringIO()))
