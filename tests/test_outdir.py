"""``inscene.outdir``: a bad ``--out`` is one line (exit 2); input listings are fingerprinted."""

from __future__ import annotations

import os
import tempfile

import pytest

from inscene.errors import BadInputError
from inscene.outdir import listing_digest, prepare_out_dir


def test_prepare_out_dir_creates_nested_folders(tmp_path):
    out = prepare_out_dir(tmp_path / "a" / "b")
    assert out.is_dir() and list(out.iterdir()) == []  # the write check leaves nothing behind


def test_an_existing_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(BadInputError, match="is an existing file, not a folder") as exc:
        prepare_out_dir(tmp_path / "f")
    assert exc.value.exit_code == 2 and "\n" not in str(exc.value)


def test_a_folder_under_a_file_cannot_be_created(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(BadInputError, match="cannot create --out folder"):
        prepare_out_dir(tmp_path / "f" / "sub")


def test_an_unwritable_folder_is_refused(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(tempfile, "mkstemp", denied)  # a read-only mount or immutable folder, even for root
    with pytest.raises(BadInputError, match="--out folder .* is not writable: Operation not permitted"):
        prepare_out_dir(tmp_path)


def test_listing_digest_changes_with_names_sizes_and_mtimes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"1")
    b.write_bytes(b"22")
    base = listing_digest([("a", a), ("b", b)])
    assert listing_digest([("a", a), ("b", b)]) == base
    assert listing_digest([("a", a)]) != base
    assert listing_digest([("a", a), ("c", b)]) != base
    os.utime(b, ns=(1, 1))
    assert listing_digest([("a", a), ("b", b)]) != base
