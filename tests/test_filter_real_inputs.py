"""Input listing for the pipelines: folders, globs, URLs, list files, img2dataset tars, keys, pseudonyms."""

from __future__ import annotations

import io
import json
import pickle
import tarfile
from pathlib import Path

import fsspec
import numpy as np
import pytest
import skimage.data

from inscene import imageio
from inscene.errors import BadInputError
from pipelines.inputs import Pseudonymiser, list_inputs, load_salt, read_input, read_sidecars, sanitize_key


def _png(seed: int = 0, size: int = 16) -> bytes:
    rgb = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    return imageio.encode_image(rgb, "png")


@pytest.fixture()
def tree(tmp_path) -> Path:
    root = tmp_path / "gallery"
    files = {
        "alice/001.jpg": _png(1), "alice/2019/002.png": _png(2), "bob/x.webp": _png(3), "loose.png": _png(4),
        "bob/notes.txt": b"not listed", ".hidden/secret.png": _png(5), "alice/.DS_Store": b"junk",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def test_folder_is_walked_recursively_with_gallery_identities(tree):
    refs = list_inputs([tree])
    by_key = {r.key: r for r in refs}
    assert sorted(by_key) == ["alice_001", "alice_2019_002", "bob_x", "loose"]
    assert by_key["alice_2019_002"].identity == "alice"  # first sub-folder under the input
    assert by_key["bob_x"].identity == "bob" and by_key["loose"].identity is None
    assert read_input(by_key["bob_x"]) == (tree / "bob" / "x.webp").read_bytes()
    assert all(r.identity is None for r in list_inputs([tree], identity_from="none"))
    assert [r.key for r in list_inputs([tree])] == [r.key for r in refs]  # stable order


def test_globs_list_files_and_urls(tree, tmp_path):
    globbed = list_inputs([str(tree / "**" / "*.jpg")])
    assert [r.source for r in globbed] == [str(tree / "alice" / "001.jpg")]
    assert globbed[0].identity == "alice"

    txt = tree / "list.txt"
    txt.write_text("# a comment\nalice/001.jpg\n\n" + str(tree / "bob" / "x.webp") + "\nmissing.png\n")
    refs = list_inputs([txt])
    assert [r.key for r in refs] == ["alice_001", "bob_x", "missing"]  # a missing entry is kept: a decode reject
    csv = tmp_path / "list.csv"
    csv.write_text(f"caption,path,identity\nhi,{tree / 'loose.png'},carol\n")
    (ref,) = list_inputs([csv])
    assert ref.identity == "carol" and read_input(ref) == (tree / "loose.png").read_bytes()

    url = (tree / "loose.png").as_uri()
    (ref,) = list_inputs([url])
    assert ref.source == url and read_input(ref) == (tree / "loose.png").read_bytes()

    mem = fsspec.filesystem("memory")
    mem.pipe("/inscene-inputs/p1/a.png", _png(7))
    mem.pipe("/inscene-inputs/p2/b.png", _png(8))
    refs = list_inputs(["memory://inscene-inputs"])
    assert [r.identity for r in refs] == ["p1", "p2"]
    assert read_input(refs[1]) == _png(8)
    assert [r.key for r in list_inputs(["memory://inscene-inputs/*/a.png"])] == ["p1_a"]


def test_missing_argument_and_unknown_file_type_are_usage_errors(tmp_path):
    with pytest.raises(BadInputError, match="not found"):
        list_inputs([tmp_path / "nope"])
    (tmp_path / "x.doc").write_bytes(b"x")
    with pytest.raises(BadInputError, match="not an image"):
        list_inputs([tmp_path / "x.doc"])
    with pytest.raises(BadInputError):
        list_inputs([])


def _img2dataset_tar(path: Path) -> list[bytes]:
    """A shard as img2dataset writes it: {key}.jpg + {key}.txt + {key}.json (and one failed sample)."""
    images = []
    with tarfile.open(path, "w") as tf:
        for i in range(3):
            key = f"0000{i:05d}"
            jpg = imageio.encode_image(skimage.data.astronaut()[:: i + 1, :: i + 1], "jpeg", quality=90)
            images.append(jpg)
            meta = {"url": f"https://example.org/{i}.jpg", "caption": f"photo {i}", "key": key, "status": "success"}
            for name, data in ((f"{key}.jpg", jpg), (f"{key}.txt", f"photo {i}".encode()),
                               (f"{key}.json", json.dumps(meta).encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo("000000099.json")  # metadata without an image: not an input
        info.size = 2
        tf.addfile(info, io.BytesIO(b"{}"))
    return images


def test_img2dataset_tars_give_one_item_per_image_with_caption_and_url(tmp_path):
    folder = tmp_path / "cc12m"
    folder.mkdir()
    images = _img2dataset_tar(folder / "00000.tar")
    (folder / "00000.parquet").write_bytes(b"PAR1")  # beside it, ignored
    refs = list_inputs([folder], identity_from="none")
    assert [r.key for r in refs] == ["00000_000000000", "00000_000000001", "00000_000000002"]
    assert [read_input(r) for r in refs] == images
    side = read_sidecars(refs[1])
    assert side["caption"] == "photo 1" and side["json"]["url"] == "https://example.org/1.jpg"
    assert [r.key for r in list_inputs([folder / "00000.tar"], identity_from="none")] == [
        "00000_000000000", "00000_000000001", "00000_000000002"]


def test_img2dataset_captions_and_urls_reach_the_shards(tmp_path):
    from inscene.config import InsceneConfig
    from inscene.shards import ShardReader
    from pipelines.filter_real import FilterOptions, Thresholds, run_filter_real

    folder = tmp_path / "cc12m"
    folder.mkdir()
    _img2dataset_tar(folder / "00000.tar")
    opts = FilterOptions(profile="cc12m", thresholds=Thresholds.for_profile("cc12m", min_short_side=256,
                                                                            max_piqe=100.0), detector="dlib",
                         iqa="piqe")
    res = run_filter_real([folder], tmp_path / "out", opts, config=InsceneConfig(real_filter={"crop_size": 512}))
    d = res.summary.decisions.set_index("key")
    assert d.loc["00000_000000002", "reason"] == "short side < 256"  # 171 px
    samples = list(ShardReader(res.out / "dataset"))
    assert samples and all(s.meta["subset"] == "nonref" and s.meta["identity_id"] == "" for s in samples)
    s = next(s for s in samples if s.key == "00000_000000000")
    assert s.meta["caption"] == "photo 0" and s.meta["url"] == "https://example.org/0.jpg"
    assert s.meta["source"].endswith("00000.tar#000000000.jpg")


def test_keys_are_shard_safe_unique_and_stable(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    (root / "a b.png").write_bytes(_png(1))
    (root / "a_b.png").write_bytes(_png(2))
    (root / "c.d.e.png").write_bytes(_png(3))
    keys = [r.key for r in list_inputs([root, root / "a_b.png"])]  # a file listed twice counts once
    assert len(keys) == len(set(keys)) == 3
    assert all(k.startswith("a_b-") for k in keys[:2]) and keys[2] == "c_d_e"
    assert keys == [r.key for r in list_inputs([root])]
    assert sanitize_key("x" * 300) == sanitize_key("x" * 300) and len(sanitize_key("x" * 300)) <= 96


def test_pseudonymiser_keeps_its_salt_to_itself(tmp_path, monkeypatch):
    p = Pseudonymiser(b"0123456789abcdef")
    assert "0123456789abcdef" not in repr(p)
    assert pickle.loads(pickle.dumps(p)).identity("x") == p.identity("x")
    assert p.identity("x").startswith("id-") and len(p.identity("x")) == 19
    with pytest.raises(BadInputError):
        Pseudonymiser(b"short")
    monkeypatch.setenv("INSCENE_PSEUDONYM_SALT", "from-the-environment!")
    assert load_salt(None) == b"from-the-environment!"
    monkeypatch.delenv("INSCENE_PSEUDONYM_SALT")
    with pytest.raises(BadInputError, match="salt"):
        load_salt(None)
    f = tmp_path / "salt"
    f.write_bytes(b"abcdefghijklmnopqrstuvwxyz\n")
    assert load_salt(f) == b"abcdefghijklmnopqrstuvwxyz"
    root = tmp_path / "g"
    (root / "Alice Smith").mkdir(parents=True)
    (root / "Alice Smith" / "holiday.png").write_bytes(_png(1))
    (ref,) = list_inputs([root], pseudonymiser=p)
    assert ref.key == p.key("Alice Smith/holiday") and "Alice" not in ref.key + ref.label
    assert ref.identity == "Alice Smith"  # in memory only: the pipeline writes p.identity(...) instead
