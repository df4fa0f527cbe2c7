"""Versioned records shared by every wing (DESIGN.md 'Records').

Coordinates are pixels of the image the record describes; boxes are ``[x1, y1, x2, y2]``;
landmarks are ``[[x, y], ...]`` with the 5 points in the insightface/facexlib order: left eye,
right eye, nose, left mouth corner, right mouth corner (left/right as seen in the image).
Every record carries provenance: source, sha256 of the original bytes, backends used, seed.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 1

KEY_PATTERN = r"^[A-Za-z0-9_\-]+$"
_KEY_RE = re.compile(KEY_PATTERN)

Scalar = str | int | float | bool | None


class _Record(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schema_version: int = Field(SCHEMA_VERSION, description="Version of this record layout.")


class Provenance(_Record):
    """Where a value came from."""

    source: str = Field(..., description="Original path, URL or generator call the item came from.")
    sha256: str = Field(..., pattern=r"^[0-9a-f]{64}$", description="sha256 of the original bytes.")
    backends: dict[str, str] = Field(
        default_factory=dict,
        description="Role -> backend name behind each value (e.g. {'detector': 'dlib-hog'}).",
    )
    seed: int | None = Field(None, description="Seed of any random choice made for this item.")


class Face(_Record):
    """One detected face, in pixels of the image it was found in."""

    box: list[float] = Field(..., min_length=4, max_length=4, description="[x1, y1, x2, y2].")
    landmarks: list[list[float]] = Field(
        ...,
        min_length=5,
        max_length=5,
        description="5 points: left eye, right eye, nose, left mouth corner, right mouth corner.",
    )
    landmarks68: list[list[float]] | None = Field(None, description="Optional 68-point (iBUG) landmarks.")
    score: float = Field(..., description="Detector confidence (backend-specific scale).")
    backend: str = Field(..., description="Detector (and landmark) backend that produced this face.")

    @field_validator("box")
    @classmethod
    def _box_ordered(cls, v: list[float]) -> list[float]:
        if not (v[2] > v[0] and v[3] > v[1]):
            raise ValueError(f"box must satisfy x2 > x1 and y2 > y1, got {v}")
        return v

    @field_validator("landmarks", "landmarks68")
    @classmethod
    def _points_are_xy(cls, v: list[list[float]] | None) -> list[list[float]] | None:
        if v is not None and any(len(p) != 2 for p in v):
            raise ValueError("each landmark must be [x, y]")
        return v

    @model_validator(mode="after")
    def _landmarks68_count(self) -> Face:
        if self.landmarks68 is not None and len(self.landmarks68) != 68:
            raise ValueError(f"landmarks68 must have 68 points, got {len(self.landmarks68)}")
        return self

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        x1, y1, x2, y2 = self.box
        return (x2 - x1) * (y2 - y1)


class Identity(_Record):
    """A person with reference images, stored once in the identity shards."""

    identity_id: str = Field(..., pattern=KEY_PATTERN, description="Stable id (pseudonymised for real data).")
    source_id: str | None = Field(None, description="Id in the source dataset (e.g. CelebRef-HQ File ID).")
    pseudonymised: bool = Field(False, description="True when identity_id is an HMAC of the real id.")
    references: list[str] = Field(default_factory=list, description="Keys of this identity's reference images.")
    split: str | None = Field(None, description="Split this identity belongs to (identity-disjoint splits).")


class Decision(_Record):
    """A stage's verdict on one item, with every value it measured."""

    item: str = Field(..., description="The item's key or source path.")
    stage: str = Field(..., description="Stage that decided.")
    accepted: bool
    reason: str | None = Field(None, description="Why it was rejected (None when accepted).")
    measured: dict[str, Scalar] = Field(default_factory=dict, description="Every value the stage measured.")
    backends: dict[str, str] = Field(default_factory=dict, description="Backend behind each measured value.")

    @model_validator(mode="after")
    def _reason_when_rejected(self) -> Decision:
        if not self.accepted and not self.reason:
            raise ValueError("a rejection must carry a reason")
        return self


class DegradationParams(_Record):
    """A replayable degradation operator G (filled in by the degradations module, §3.2, §4.1)."""

    pipeline: str = Field("realesrgan", description="Pipeline/profile that sampled these parameters.")
    seed: int | None = Field(None, description="Seed the parameters were sampled with.")
    params: dict[str, Any] = Field(default_factory=dict, description="JSON-serialisable operator parameters.")


class Sample(_Record):
    """One image of a dataset split, with everything known about it."""

    key: str = Field(..., pattern=KEY_PATTERN, description="Shard key (no dots).")
    split: str = Field(..., description="train / val / test.")
    subset: str = Field(..., description="synthetic / real / nonref / test-real / demo ...")
    width: int = Field(..., gt=0)
    height: int = Field(..., gt=0)
    identity_id: str | None = Field(None, description="Identity shown (references live in identity shards).")
    faces: list[Face] = Field(default_factory=list)
    prompt: str | None = Field(None, description="Generation prompt (synthetic subset).")
    degradation: DegradationParams | None = None
    provenance: Provenance

    def to_meta(self) -> dict[str, Scalar]:
        """Flat, null-free metadata for a shard's json member and parquet manifest.

        Scalars stay columns; faces, backends and degradation are JSON strings. Missing strings
        become "" and a missing seed -1, so every sample has the same column types (HF datasets
        infers features from the first examples and cannot widen an all-null column later).
        """
        prov = self.provenance
        primary = max(self.faces, key=lambda f: f.area) if self.faces else None
        return {
            "schema_version": self.schema_version,
            "key": self.key,
            "split": self.split,
            "subset": self.subset,
            "width": self.width,
            "height": self.height,
            "identity_id": self.identity_id or "",
            "prompt": self.prompt or "",
            "n_faces": len(self.faces),
            "face_box": json.dumps(primary.box) if primary else "",
            "face_landmarks": json.dumps(primary.landmarks) if primary else "",
            "faces": json.dumps([f.model_dump(mode="json") for f in self.faces]),
            "degradation": self.degradation.model_dump_json() if self.degradation else "",
            "source": prov.source,
            "sha256": prov.sha256,
            "backends": json.dumps(prov.backends, sort_keys=True),
            "seed": -1 if prov.seed is None else prov.seed,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Sample:
        """Inverse of :meth:`to_meta`."""
        faces = [Face.model_validate(f) for f in json.loads(meta.get("faces") or "[]")]
        degradation = (
            DegradationParams.model_validate_json(meta["degradation"]) if meta.get("degradation") else None
        )
        seed = meta.get("seed", -1)
        return cls(
            schema_version=meta.get("schema_version", SCHEMA_VERSION),
            key=meta["key"],
            split=meta["split"],
            subset=meta["subset"],
            width=meta["width"],
            height=meta["height"],
            identity_id=meta.get("identity_id") or None,
            prompt=meta.get("prompt") or None,
            faces=faces,
            degradation=degradation,
            provenance=Provenance(
                source=meta["source"],
                sha256=meta["sha256"],
                backends=json.loads(meta.get("backends") or "{}"),
                seed=None if seed is None or seed < 0 else seed,
            ),
        )


RECORDS: dict[str, type[BaseModel]] = {
    "Sample": Sample,
    "Face": Face,
    "Identity": Identity,
    "Decision": Decision,
    "DegradationParams": DegradationParams,
    "Provenance": Provenance,
}


def json_schema(name: Literal["all"] | str = "all") -> dict[str, Any]:
    """JSON Schema of one record, or of all of them keyed by name."""
    if name == "all":
        return {
            "schema_version": SCHEMA_VERSION,
            "records": {n: m.model_json_schema() for n, m in RECORDS.items()},
        }
    if name not in RECORDS:
        raise KeyError(name)
    return RECORDS[name].model_json_schema()


def is_valid_key(key: str) -> bool:
    """True when ``key`` can be a shard key (letters, digits, '_' and '-')."""
    return bool(_KEY_RE.match(key))
