"""Typed errors. Each carries the exit code the CLI uses and a one-line message.

Exit codes (issue 2): 0 success, 1 a run that finished with failures it reported,
2 bad usage or bad input.
"""

from __future__ import annotations


class InsceneError(Exception):
    """Base class: a failure the CLI reports as one line (traceback only with --debug)."""

    exit_code = 2


class BadInputError(InsceneError):
    """User input (a path, an option, a file) that cannot be used."""

    exit_code = 2


class ImageDecodeError(BadInputError):
    """An image that cannot be decoded safely.

    Attributes:
        reason: short machine-readable reason (``empty``, ``truncated``, ``not_an_image``,
            ``too_large``, ``unsupported_mode``, ``unreadable``).
        source: what was being decoded (path, URL or ``<bytes>``).
    """

    def __init__(self, reason: str, source: str = "<bytes>", detail: str = "") -> None:
        self.reason = reason
        self.source = source
        self.detail = detail
        msg = f"cannot decode image {source}: {reason}"
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


class MissingWeightsError(InsceneError):
    """A paper backend whose weights are not on this machine.

    The message names the file, every place it was looked for, and the command that fetches it,
    so a user on an offline node knows exactly what to copy where.
    """

    exit_code = 2

    def __init__(self, model: str, filename: str, searched: list[str], fetch: str) -> None:
        self.model = model
        self.filename = filename
        self.searched = list(searched)
        self.fetch = fetch
        where = ", ".join(self.searched) if self.searched else "(no search path)"
        super().__init__(
            f"weights for '{model}' not found: {filename} (looked in: {where}); "
            f"fetch with: {fetch}"
        )


class ShardError(InsceneError):
    """A shard that is truncated, corrupt or missing."""

    exit_code = 1


class RunFailures(InsceneError):
    """A run that finished but reported failures (exit 1)."""

    exit_code = 1
