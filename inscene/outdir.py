"""Output folders of runs: created and checked up front, so a bad ``--out`` is one line (exit 2).

Pipelines that write a dataset folder call :func:`prepare_out_dir` where they create it, before any
record or shard is written: a path that is an existing file, a folder that cannot be created, or a
folder that cannot be written to (read-only mount, immutable folder, no permission) is reported as
:class:`inscene.errors.BadInputError` naming the path, instead of a raw ``PermissionError`` or
``FileExistsError`` traceback halfway through a run.

:func:`listing_digest` fingerprints a run's input listing (names, sizes, modification times), so a
resumable run can refuse a rerun whose inputs changed: partitions are positional over the sorted
listing, and a changed listing would otherwise mix old and new partitions (duplicates, losses).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

from inscene.errors import BadInputError


def prepare_out_dir(path: str | os.PathLike[str], what: str = "--out") -> Path:
    """Create the folder ``path`` (parents included) and check that files can be written in it.

    Args:
        path: the output folder.
        what: how the user named it, for the message (e.g. ``--out``).

    Returns:
        ``path`` as a :class:`Path`.

    Raises:
        BadInputError: ``path`` is an existing file, cannot be created, or is not writable.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BadInputError(f"{what} {path} is an existing file, not a folder; give a folder path")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInputError(f"cannot create {what} folder {path}: {exc.strerror or exc}") from exc
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-check-", dir=path)
    except OSError as exc:
        raise BadInputError(f"{what} folder {path} is not writable: {exc.strerror or exc}") from exc
    os.close(fd)
    os.unlink(probe)
    return path


def listing_digest(entries: Iterable[tuple[str, str | os.PathLike[str]]]) -> str:
    """sha256 over ``(name, file)`` pairs: each name with its file's size and modification time.

    Cheap (one ``stat`` per file, nothing is read). ``name`` is what identifies the file in the run
    (its sample key or its path relative to the input folder), so the digest does not depend on
    where the input folder is or how it was typed; a missing file counts as size -1.
    """
    h = hashlib.sha256()
    for name, file in entries:
        try:
            st = os.stat(file)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = -1, 0
        h.update(f"{name}\t{size}\t{mtime}\n".encode())
    return h.hexdigest()
