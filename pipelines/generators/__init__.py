"""Identity-conditioned scene generators, by name (DESIGN.md "Backends by name").

::

    from pipelines.generators import create_generator
    gen = create_generator("infiniteyou", steps=30)   # the paper's (§6.1); needs its weights
    gen.load()                                        # heavy: once per worker
    cond = gen.condition(reference_rgb)               # None when it finds no face
    images = gen.generate([prompt], [cond], [seed])   # list of HxWx3 uint8

Registered:

- ``infiniteyou`` (default, the paper's): InfiniteYou on FLUX.1-dev through diffusers, stage-1
  ("sim") weights, anti-blur LoRA; see :mod:`pipelines.generators.infiniteyou`.
- ``infiniteyou-tiny``: the same code on tiny *random* weights it builds offline in the real
  on-disk layouts (a smoke test of the whole path on CPU; its images are noise, not data).
- ``compose``: embedded and offline, not the paper's method: pastes the reference face into a
  procedural scene, so the filter, records, shards and resume can be exercised with real faces.

Creating a generator loads nothing; :meth:`Generator.load` does, once per process.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import numpy as np

from inscene.errors import BadInputError

__all__ = ["Generator", "create_generator", "list_generators", "register_generator"]


class Generator:
    """What the synthetic pipeline needs of a generator.

    Attributes:
        name: registry name (recorded with every image).
        version: version of the generator code/weights recorded with every image.
        uses_gpu: the stage running it asks Dask for a ``GPU`` resource.
        paper: True for the paper's method (the records say which one produced an image).
        width, height: output size in pixels.
    """

    name: ClassVar[str] = ""
    version: ClassVar[str] = "1"
    uses_gpu: ClassVar[bool] = False
    paper: ClassVar[bool] = False
    width: int = 512
    height: int = 512

    def preflight(self) -> None:
        """Check, without loading anything, that the weights are there (raises MissingWeightsError)."""

    def load(self) -> None:
        """Locate weights and build models (idempotent; raises MissingWeightsError)."""

    def condition(self, reference_rgb: np.ndarray) -> Any:
        """The identity condition from one reference photo, or None when it holds no usable face."""
        raise NotImplementedError

    def generate(self, prompts: list[str], conditions: list[Any], seeds: list[int]) -> list[np.ndarray]:
        """One HxWx3 uint8 image per (prompt, condition, seed); deterministic in the seed."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Name, version and every option that shapes the images (recorded per image)."""
        return {"name": self.name, "version": self.version, "width": self.width, "height": self.height}

    def loras(self) -> list[dict[str, Any]]:
        """LoRAs applied (name, file, scale); recorded per image."""
        return []


_GENERATORS: dict[str, str] = {
    "infiniteyou": "pipelines.generators.infiniteyou:InfiniteYouGenerator",
    "infiniteyou-tiny": "pipelines.generators.tiny:TinyInfiniteYouGenerator",
    "compose": "pipelines.generators.compose:ComposeGenerator",
}


def create_generator(name: str, **opts: Any) -> Generator:
    """A generator by name (see :func:`list_generators`); ``opts`` go to its constructor.

    Raises:
        BadInputError: unknown name or an option the generator does not take.
    """
    if name not in _GENERATORS:
        raise BadInputError(f"unknown generator '{name}'; known: {', '.join(list_generators())}")
    target = _GENERATORS[name]
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        cls = getattr(importlib.import_module(module), attr)
    else:
        cls = target
    try:
        return cls(**opts)
    except TypeError as exc:
        raise BadInputError(f"generator '{name}': {exc}") from exc


def list_generators() -> list[str]:
    """Registered generator names."""
    return sorted(_GENERATORS)


def register_generator(name: str, target: str | type) -> None:
    """Add a generator class (or ``"module:Class"``) under ``name``."""
    _GENERATORS[name] = target  # type: ignore[assignment]
