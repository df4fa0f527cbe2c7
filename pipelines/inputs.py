"""Input listing shared by the pipelines: folders, globs, fsspec URLs, list files, WebDataset tars.

:func:`list_inputs` turns the ``INPUT...`` arguments of a command into a sorted, de-duplicated list
of :class:`InputRef` (a key, where the bytes are, an optional identity and caption). Nothing is
decoded here and only tar headers are read, so listing a few hundred thousand files is cheap; the
bytes are read later, on the workers, with :func:`read_input`.

Accepted inputs:

* a **folder** (local or fsspec URL): every image below it, recursively (hidden entries skipped),
  and every ``*.tar`` below it read as a WebDataset shard (see below);
* a **glob** (``photos/**/*.jpg``, ``s3://bucket/cc12m/*.tar``);
* a single **image file** or **URL** (``file://``, ``s3://``, ``memory://``, any fsspec protocol);
* a **list file** (``.txt``/``.lst``: one path or URL a line, ``#`` comments; ``.csv``/``.tsv``: a
  header and a column named ``path``/``url``/``file``/``source``/``image``, else the first column,
  and an optional ``identity`` column). Relative entries are relative to the list file's folder;
* a **WebDataset tar**, e.g. img2dataset output (CC12M is usually downloaded that way): one item
  per image member ``{key}.jpg|png|webp``; its ``{key}.txt`` (caption) and ``{key}.json`` (url,
  ...) are located too and read with the image.

Identities (the gallery layout, ``ROOT/<identity>/*.jpg``): with ``identity_from="folder"`` the
identity of a file below a folder input is the first sub-folder under that input; for globs, list
entries and URLs it is the file's parent folder name (a list file's ``identity`` column wins).

Keys are stable across runs (resume depends on it): the path relative to its input root, without
extension, with anything but letters, digits, ``_`` and ``-`` replaced by ``_``; keys that would
collide get a short hash of their source appended. With a pseudonymiser, keys are an HMAC of the
relative path instead, so neither keys nor recorded sources reveal folder or file names.
"""

from __future__ import annotations

import csv
import glob as globmod
import hashlib
import io
import os
import re
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from inscene.errors import BadInputError, ImageDecodeError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif", ".avif", ".mpo")
LIST_SUFFIXES = (".txt", ".lst", ".csv", ".tsv")
TAR_SUFFIXES = (".tar",)
_SOURCE_COLUMNS = ("path", "url", "file", "source", "image", "filepath", "filename")
_KEY_BAD = re.compile(r"[^A-Za-z0-9_\-]+")
_GLOB_CHARS = re.compile(r"[*?\[]")
_MAX_KEY = 96

IdentityFrom = Literal["folder", "none"]


@dataclass(frozen=True)
class TarMember:
    """Where one member's bytes sit inside a tar (read with a seek, no tar parsing)."""

    tar: str
    offset: int
    size: int


@dataclass(frozen=True)
class InputRef:
    """One input image, not yet read.

    Attributes:
        key: stable, unique, shard-safe key.
        source: path or URL of the image (for a tar member: ``<tar>#<member>``).
        label: what outputs record as its source (``source``, or a pseudonym).
        identity: raw identity name (gallery layout), or None. Never written when pseudonymised.
        member: the image's location inside a tar, if it is a tar member.
        sidecars: ``{"txt": TarMember, "json": TarMember}`` of a WebDataset sample.
        rel: path relative to its input root (the basis of the key).
    """

    key: str
    source: str
    label: str
    identity: str | None = None
    member: TarMember | None = None
    sidecars: dict[str, TarMember] = field(default_factory=dict)
    rel: str = ""


# ---- reading -----------------------------------------------------------------------------------


def _open_binary(path: str):
    if "://" in path:
        import fsspec

        return fsspec.open(path, "rb").open()
    return open(path, "rb")


def read_member(member: TarMember) -> bytes:
    """The bytes of one tar member.

    Raises:
        ImageDecodeError: ``unreadable`` (missing or unreadable tar) or ``truncated`` (tar cut short).
    """
    try:
        with _open_binary(member.tar) as fh:
            fh.seek(member.offset)
            data = fh.read(member.size)
    except (OSError, ValueError, ImportError) as exc:
        raise ImageDecodeError("unreadable", member.tar, f"{type(exc).__name__}: {exc}") from exc
    if len(data) != member.size:
        raise ImageDecodeError("truncated", member.tar, f"member ends after {len(data)} of {member.size} bytes")
    return data


def read_input(ref: InputRef) -> bytes:
    """The original bytes of an input (file, URL or tar member).

    Raises:
        ImageDecodeError: ``unreadable`` for missing files, permission errors and unreachable URLs.
    """
    if ref.member is not None:
        return read_member(ref.member)
    from inscene.imageio import read_source

    return read_source(ref.source)[0]


def read_sidecars(ref: InputRef) -> dict[str, Any]:
    """Caption (``txt``) and the img2dataset ``json`` of a WebDataset sample; ``{}`` otherwise.

    A sidecar that cannot be read or parsed is skipped (it is metadata, not the image).
    """
    import json

    out: dict[str, Any] = {}
    for kind, member in ref.sidecars.items():
        try:
            raw = read_member(member)
        except ImageDecodeError:
            continue
        if kind == "txt":
            out["caption"] = raw.decode("utf-8", "replace").strip()
        elif kind == "json":
            try:
                doc = json.loads(raw)
            except ValueError:
                continue
            if isinstance(doc, dict):
                out["json"] = doc
    return out


# ---- keys and pseudonyms -----------------------------------------------------------------------


def sanitize_key(text: str) -> str:
    """``text`` as a shard key: letters, digits, ``_`` and ``-`` only, at most 96 characters."""
    key = _KEY_BAD.sub("_", text).strip("_") or "item"
    if len(key) > _MAX_KEY:
        key = key[: _MAX_KEY - 9] + "-" + hashlib.sha1(text.encode()).hexdigest()[:8]
    return key


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


class Pseudonymiser:
    """HMAC-SHA256 pseudonyms with a secret salt the user keeps outside the dataset.

    The same salt always gives the same pseudonyms (so runs resume and datasets built in several
    runs agree); without the salt they cannot be reversed or recomputed. The salt is never written
    anywhere; :attr:`fingerprint` (an HMAC of a fixed string) identifies it in run records so a
    resumed run can check it uses the same salt.

    Args:
        salt: the secret, at least 16 bytes.
    """

    def __init__(self, salt: bytes) -> None:
        if len(salt) < 16:
            raise BadInputError(f"the pseudonymisation salt must be at least 16 bytes, got {len(salt)}")
        self._salt = bytes(salt)

    def __repr__(self) -> str:  # never show the salt
        return f"Pseudonymiser(fingerprint={self.fingerprint!r})"

    def __reduce__(self):  # picklable for workers, the salt travels only in memory
        return (Pseudonymiser, (self._salt,))

    def digest(self, kind: str, value: str) -> str:
        """Hex HMAC-SHA256 of ``kind:value``."""
        import hmac

        return hmac.new(self._salt, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()

    def identity(self, name: str) -> str:
        """Pseudonym of an identity: ``id-`` + 16 hex digits."""
        return "id-" + self.digest("identity", name)[:16]

    def key(self, rel: str) -> str:
        """Pseudonymous key of an input, from its path relative to its input root."""
        return "p" + self.digest("key", rel)[:20]

    @property
    def fingerprint(self) -> str:
        """Identifies the salt without revealing it."""
        return self.digest("fingerprint", "inscene")[:12]


def load_salt(salt_file: str | os.PathLike[str] | None, env: str = "INSCENE_PSEUDONYM_SALT") -> bytes:
    """The pseudonymisation salt: the file's bytes (trailing newline stripped), else ``$env``.

    Raises:
        BadInputError: no salt given, an unreadable file, or a salt shorter than 16 bytes.
    """
    if salt_file is not None:
        try:
            salt = Path(salt_file).read_bytes().rstrip(b"\r\n")
        except OSError as exc:
            raise BadInputError(f"cannot read the salt file {salt_file}: {exc}") from exc
    elif os.environ.get(env):
        salt = os.environ[env].encode()
    else:
        raise BadInputError(f"--pseudonymise needs a secret salt: --salt-file PATH or ${env} (keep it out of the repo)")
    if len(salt) < 16:
        raise BadInputError(f"the pseudonymisation salt must be at least 16 bytes, got {len(salt)}")
    return salt


# ---- listing -----------------------------------------------------------------------------------


@dataclass
class _Found:
    source: str
    rel: str
    identity: str | None
    member: TarMember | None = None
    sidecars: dict[str, TarMember] = field(default_factory=dict)


def _is_url(text: str) -> bool:
    return "://" in text


def _suffix(name: str) -> str:
    return os.path.splitext(name)[1].lower()


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.replace("\\", "/").split("/") if part)


def _tar_items(tar: str, rel_prefix: str, identity: str | None) -> list[_Found]:
    """One item per image member of a WebDataset tar, with its txt/json sidecars."""
    try:
        with _open_binary(tar) as fh, tarfile.open(fileobj=fh, mode="r:") as tf:
            members = [m for m in tf.getmembers() if m.isfile()]
    except (OSError, tarfile.TarError, ValueError) as exc:
        raise BadInputError(f"cannot read the tar {tar}: {type(exc).__name__}: {exc}") from exc
    groups: dict[str, dict[str, TarMember]] = {}
    for m in members:
        base = os.path.basename(m.name)
        if "." not in base or base.startswith("."):
            continue
        dirname = os.path.dirname(m.name)
        stem, ext = base.split(".", 1)
        sample = f"{dirname}/{stem}" if dirname else stem
        groups.setdefault(sample, {})[ext.lower()] = TarMember(tar, m.offset_data, m.size)
    out = []
    for sample in sorted(groups):
        fields = groups[sample]
        image = next((e for e in ("jpg", "jpeg", "png", "webp") if e in fields), None)
        if image is None:
            continue
        sidecars = {k: fields[k] for k in ("txt", "json") if k in fields}
        out.append(_Found(f"{tar}#{sample}.{image}", f"{rel_prefix}/{sample}", identity, fields[image], sidecars))
    return out


def _file_items(path: str, rel: str, identity: str | None) -> list[_Found]:
    suffix = _suffix(path)
    if suffix in TAR_SUFFIXES:
        return _tar_items(path, os.path.splitext(rel)[0], identity)
    if suffix in IMAGE_SUFFIXES:
        return [_Found(path, os.path.splitext(rel)[0], identity)]
    return []


def _identity_of(rel: str, identity_from: IdentityFrom, first_level: bool) -> str | None:
    if identity_from == "none":
        return None
    parts = [p for p in rel.replace("\\", "/").split("/") if p]
    if len(parts) < 2:
        return None
    return parts[0] if first_level else parts[-2]


def _walk_local(root: str, identity_from: IdentityFrom) -> list[_Found]:
    out: list[_Found] = []
    for dirpath, dirnames, filenames in os.walk(root, onerror=None, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            out.extend(_file_items(path, rel, _identity_of(rel, identity_from, first_level=True)))
    return out


def _walk_url(fs: Any, root: str, identity_from: IdentityFrom) -> list[_Found]:
    out: list[_Found] = []
    root = root.rstrip("/")
    for path in sorted(fs.find(root)):
        rel = path[len(root) :].lstrip("/")
        if _hidden(rel):
            continue
        url = fs.unstrip_protocol(path)
        out.extend(_file_items(url, rel, _identity_of(rel, identity_from, first_level=True)))
    return out


def _list_file(path: str, identity_from: IdentityFrom) -> list[_Found]:
    from inscene.imageio import read_source

    try:
        text = read_source(path)[0].decode("utf-8-sig")
    except (ImageDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"cannot read the list file {path}: {exc}") from exc
    base = path.rsplit("/", 1)[0] if _is_url(path) else os.path.dirname(os.path.abspath(path))
    rows: list[tuple[str, str | None]] = []
    if _suffix(path) in (".csv", ".tsv"):
        reader = csv.reader(io.StringIO(text), delimiter="\t" if _suffix(path) == ".tsv" else ",")
        header = [h.strip().lower() for h in next(reader, [])]
        if not header:
            return []
        col = next((header.index(c) for c in _SOURCE_COLUMNS if c in header), 0)
        id_col = header.index("identity") if "identity" in header else None
        for rec in reader:
            if len(rec) > col and rec[col].strip():
                ident = rec[id_col].strip() if id_col is not None and len(rec) > id_col else None
                rows.append((rec[col].strip(), ident or None))
    else:
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                rows.append((line, None))
    out: list[_Found] = []
    for entry, ident in rows:
        if not _is_url(entry) and not os.path.isabs(entry):
            entry = f"{base}/{entry}" if _is_url(base) else os.path.join(base, entry)
        if not _is_url(entry) and not _is_url(base) and os.path.commonpath([entry, base]) == base:
            rel = os.path.relpath(entry, base)
        else:
            rel = entry.split("://", 1)[-1].lstrip("/")
        if identity_from == "folder" and ident is None:
            ident = _identity_of(rel, identity_from, first_level=False)
        if _suffix(entry) in TAR_SUFFIXES:
            out.extend(_tar_items(entry, os.path.splitext(rel)[0], ident))
        else:
            # any other entry is an image: a missing or unreadable one becomes a decode rejection
            out.append(_Found(entry, os.path.splitext(rel)[0], ident))
    return out


def _glob_prefix(pattern: str) -> str:
    parts = pattern.replace("\\", "/").split("/")
    keep = []
    for p in parts:
        if _GLOB_CHARS.search(p):
            break
        keep.append(p)
    return "/".join(keep)


def _expand(arg: str, identity_from: IdentityFrom) -> list[_Found]:
    if _is_url(arg):
        import fsspec

        try:
            fs, path = fsspec.core.url_to_fs(arg)
        except (ImportError, ValueError) as exc:
            raise BadInputError(f"cannot open {arg}: {exc}") from exc
        try:
            if _GLOB_CHARS.search(path):
                prefix = _glob_prefix(path)
                out: list[_Found] = []
                for p in sorted(fs.glob(path)):
                    rel = p[len(prefix) :].lstrip("/")
                    if fs.isdir(p):
                        out.extend(_walk_url(fs, p, identity_from))
                    else:
                        url = fs.unstrip_protocol(p)
                        out.extend(_file_items(url, rel, _identity_of(p, identity_from, first_level=False)))
                return out
            if fs.isdir(path):
                return _walk_url(fs, path, identity_from)
            if not fs.exists(path):
                raise BadInputError(f"input not found: {arg}")
        except (OSError, PermissionError) as exc:
            raise BadInputError(f"cannot list {arg}: {type(exc).__name__}: {exc}") from exc
        if _suffix(path) in LIST_SUFFIXES:
            return _list_file(arg, identity_from)
        rel = path.rsplit("/", 1)[-1]
        return _file_items(arg, rel, _identity_of(path, identity_from, first_level=False))
    if _GLOB_CHARS.search(arg) and not os.path.exists(arg):
        prefix = _glob_prefix(arg)
        out = []
        for p in sorted(globmod.glob(arg, recursive=True)):
            rel = os.path.relpath(p, prefix or ".")
            if os.path.isdir(p):
                out.extend(_walk_local(p, identity_from))
            else:
                out.extend(_file_items(p, rel, _identity_of(os.path.abspath(p), identity_from, first_level=False)))
        return out
    if os.path.isdir(arg):
        return _walk_local(arg, identity_from)
    if not os.path.lexists(arg):
        raise BadInputError(f"input not found: {arg}")
    if _suffix(arg) in LIST_SUFFIXES:
        return _list_file(arg, identity_from)
    found = _file_items(arg, os.path.basename(arg), _identity_of(os.path.abspath(arg), identity_from, False))
    if not found:
        raise BadInputError(
            f"{arg}: not an image ({', '.join(IMAGE_SUFFIXES)}), a tar, a list file "
            f"({', '.join(LIST_SUFFIXES)}) or a folder"
        )
    return found


def list_inputs(
    inputs: Sequence[str | os.PathLike[str]],
    *,
    identity_from: IdentityFrom = "folder",
    pseudonymiser: Pseudonymiser | None = None,
) -> list[InputRef]:
    """Expand command-line inputs into a stable, sorted, de-duplicated list of :class:`InputRef`.

    Args:
        inputs: folders, globs, files, URLs, list files and tars (see the module docstring).
        identity_from: ``folder`` (gallery layout) or ``none``.
        pseudonymiser: when given, keys and recorded labels are pseudonyms and identities are
            replaced by their pseudonyms' inputs (the raw name stays in memory only).

    Returns:
        One ref per image, in a deterministic order (the order of the arguments, each sorted).

    Raises:
        BadInputError: an argument that does not exist, or a folder/glob/tar that cannot be listed.
    """
    if not inputs:
        raise BadInputError("no inputs given")
    found: list[_Found] = []
    seen: set[str] = set()
    for arg in inputs:
        for f in _expand(os.fspath(arg), identity_from):
            if f.source not in seen:  # the same file listed twice is one input
                seen.add(f.source)
                found.append(f)
    if pseudonymiser is not None:
        keys = [pseudonymiser.key(f.rel) for f in found]
    else:
        keys = [sanitize_key(f.rel) for f in found]
    counts: dict[str, int] = {}
    for k in keys:
        counts[k] = counts.get(k, 0) + 1
    refs = []
    used: set[str] = set()
    for f, k in zip(found, keys, strict=True):
        if counts[k] > 1:
            k = sanitize_key(f"{k}-{_short_hash(f.source)}")
        while k in used:  # same relative path under two inputs with colliding hashes: never expected
            k = sanitize_key(f"{k}-{_short_hash(k + f.source)}")
        used.add(k)
        label = f"pseudonymised:{k}" if pseudonymiser is not None else f.source
        refs.append(InputRef(k, f.source, label, f.identity, f.member, dict(f.sidecars), f.rel))
    return refs


def iter_batches(items: Iterable[Any], size: int) -> Iterable[list[Any]]:
    """Consecutive lists of at most ``size`` items."""
    batch: list[Any] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


__all__ = [
    "IMAGE_SUFFIXES",
    "InputRef",
    "Pseudonymiser",
    "TarMember",
    "iter_batches",
    "list_inputs",
    "load_salt",
    "read_input",
    "read_member",
    "read_sidecars",
    "sanitize_key",
]
