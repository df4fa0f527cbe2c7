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


class _Part(BaseModel):
    """A nested piece of a record (no version of its own: the enclosing record carries it)."""

    model_config = ConfigDict(extra="forbid")


KernelKind = Literal[
    "iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso",
    "sinc", "delta",
]
ResizeMode = Literal["area", "bilinear", "bicubic"]
_GAUSSIAN_KINDS = {"iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"}
_MAX_SEED = 2**53  # seeds stay exact in any JSON reader (IEEE doubles)


class BlurKernel(_Part):
    """A blur kernel by its generating parameters (Real-ESRGAN's kernel families, §4.1).

    ``iso``/``aniso``: Gaussian exp(-0.5 xᵀΣ⁻¹x); ``generalized_*``: exp(-0.5 (xᵀΣ⁻¹x)^β);
    ``plateau_*``: 1 / (1 + (xᵀΣ⁻¹x)^β); ``sinc``: circular low-pass with cutoff ω_c (rad/pixel);
    ``delta``: identity. Σ = R(θ) diag(σx², σy²) R(θ)ᵀ, x = (column, row) offsets from the centre.
    Every kernel is normalised to sum 1.
    """

    kind: KernelKind
    size: int = Field(..., ge=1, le=41, description="Odd kernel size in pixels (Real-ESRGAN: 7..21).")
    sigma_x: float | None = Field(None, gt=0, le=50, description="σ along the rotated x axis (pixels).")
    sigma_y: float | None = Field(None, gt=0, le=50, description="σ along the rotated y axis (pixels).")
    rotation: float = Field(0.0, ge=-7.0, le=7.0, description="Rotation θ in radians (0 for isotropic).")
    beta: float | None = Field(None, gt=0, le=10, description="Shape β (generalized and plateau kernels).")
    cutoff: float | None = Field(None, gt=0, le=3.1416, description="Sinc cutoff ω_c in (0, π] rad/pixel.")

    @model_validator(mode="after")
    def _parameters_match_kind(self) -> BlurKernel:
        if self.size % 2 != 1:
            raise ValueError(f"kernel size must be odd, got {self.size}")
        if self.kind in _GAUSSIAN_KINDS:
            if self.sigma_x is None or self.sigma_y is None:
                raise ValueError(f"a {self.kind} kernel needs sigma_x and sigma_y")
            if self.kind.endswith("iso") and not self.kind.endswith("aniso"):
                if self.sigma_x != self.sigma_y or self.rotation != 0.0:
                    raise ValueError(f"a {self.kind} kernel has sigma_y == sigma_x and rotation 0")
        if self.kind.startswith(("generalized", "plateau")) and self.beta is None:
            raise ValueError(f"a {self.kind} kernel needs beta")
        if self.kind == "sinc" and self.cutoff is None:
            raise ValueError("a sinc kernel needs cutoff")
        return self


class PSFField(_Part):
    """A position-dependent blur (§9.8, after Lin et al.'s lens blur fields).

    At normalised radius r (0 at the centre, 1 at the corners) the PSF is an anisotropic Gaussian
    elongated along the radial direction: σ_t(r) = σ_c + (σ_k − σ_c)·r^γ tangentially and
    σ_r(r) = σ_t(r)·(1 + (a − 1)·r^γ) radially. The field is defined on a ``grid`` x ``grid``
    lattice of anchor PSFs spanning the image (corners included) and interpolated bilinearly
    between anchors.
    """

    sigma_center: float = Field(..., gt=0, le=50, description="σ at the image centre (pixels).")
    sigma_corner: float = Field(..., gt=0, le=50, description="Tangential σ at the corners (pixels).")
    anisotropy: float = Field(1.0, ge=1.0, le=10, description="Radial/tangential σ ratio at the corners.")
    exponent: float = Field(2.0, gt=0, le=8, description="Growth exponent γ of blur with radius.")
    size: int = Field(21, ge=3, le=41, description="Odd PSF size in pixels.")
    grid: int = Field(8, ge=2, le=32, description="Anchor PSFs per side.")

    @model_validator(mode="after")
    def _odd(self) -> PSFField:
        if self.size % 2 != 1:
            raise ValueError(f"PSF size must be odd, got {self.size}")
        return self


class NoiseSpec(_Part):
    """Additive noise with its own seed: the same spec gives the same field at the same size."""

    kind: Literal["gaussian", "poisson"]
    gray: bool = Field(False, description="One field shared by R, G and B (else one per channel).")
    sigma: float | None = Field(None, ge=0, le=255, description="Gaussian σ in 0-255 units.")
    scale: float | None = Field(None, ge=0, le=100, description="Poisson noise scale.")
    seed: int = Field(..., ge=0, lt=_MAX_SEED, description="Seed of the noise field.")

    @model_validator(mode="after")
    def _parameters_match_kind(self) -> NoiseSpec:
        if self.kind == "gaussian" and self.sigma is None:
            raise ValueError("gaussian noise needs sigma")
        if self.kind == "poisson" and self.scale is None:
            raise ValueError("poisson noise needs scale")
        return self


class ResizeSpec(_Part):
    """A resize by ``factor`` (stage 1: of the current size; stage 2: of GT size / scale)."""

    factor: float = Field(..., gt=0, le=16)
    mode: ResizeMode


class DegradationStage(_Part):
    """One Real-ESRGAN stage: blur -> resize -> noise -> JPEG (stage 2's JPEG is in ``final``)."""

    blur: BlurKernel | None = Field(None, description="Blur kernel; None skips the blur.")
    psf_field: PSFField | None = Field(None, description="Spatially varying blur instead of ``blur`` (§9.8).")
    resize: ResizeSpec
    noise: list[NoiseSpec] = Field(default_factory=list, description="Noises added in order.")
    jpeg_quality: int | None = Field(None, ge=1, le=100, description="libjpeg quality; None skips.")

    @model_validator(mode="after")
    def _one_blur(self) -> DegradationStage:
        if self.blur is not None and self.psf_field is not None:
            raise ValueError("a stage has either blur or psf_field, not both")
        return self


class FinalStep(_Part):
    """Real-ESRGAN's last step: [resize to GT/scale + sinc] and JPEG, in either order."""

    order: Literal["resize_sinc_jpeg", "jpeg_resize_sinc"]
    resize_mode: ResizeMode
    sinc: BlurKernel | None = Field(None, description="Final sinc filter; None = delta (no filter).")
    jpeg_quality: int | None = Field(None, ge=1, le=100, description="libjpeg quality; None skips.")


class DegradationParams(_Record):
    """A replayable degradation operator G (§3.2 "image-wide consistency", §4.1, §7.4).

    Applying the same record to two images applies the same G: same kernels, resize factors and
    modes, noise fields (per seed, at a given size) and JPEG qualities. ``identity`` marks a
    no-degradation draw (S3Diff's ``no_degradation_prob``). ``params`` holds free-form values of
    operators this toolkit does not build itself (e.g. an external degradation's settings).
    """

    pipeline: str = Field("realesrgan", description="Profile or preset that produced these parameters.")
    seed: int | None = Field(None, description="Seed the parameters were sampled with.")
    scale: int = Field(4, ge=1, le=16, description="GT/LQ size ratio of the final resize.")
    output: Literal["lq", "gt"] = Field(
        "gt", description="'gt': the LQ is resized back to the GT size (bicubic); 'lq': kept at GT/scale."
    )
    usm: bool = Field(False, description="Unsharp-mask the input before degrading (Real-ESRNet's gt_usm).")
    identity: bool = Field(False, description="No degradation: the output is the input (resized to the output size).")
    stage1: DegradationStage | None = None
    stage2: DegradationStage | None = None
    final: FinalStep | None = None
    params: dict[str, Any] = Field(default_factory=dict, description="Free-form operator parameters.")

    @property
    def replayable(self) -> bool:
        """True when this record fully describes an operator :func:`inscene.degradations.apply` runs."""
        return self.identity or (
            self.stage1 is not None and self.stage2 is not None and self.final is not None
        )


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
