"""Publishing InScene as a Hugging Face dataset, and loading it back.

Provenance: Face2Scene (arXiv 2603.16570) Table 1 and §4.1 (subsets, splits, counts and the
CLIP-IQA / MANIQA / MUSIQ means), §6.1 (synthetic scenes and the metadata stored per sample:
prompt, resolution, face box, landmarks, identity), §6.2 (the real-photo filter), §6.3 (phone
captures). The paper publishes InScene on the Hub; this module builds that repository.

**The published repository** (what ``inscene publish`` assembles, then uploads)::

    README.md                                   dataset card: YAML metadata + prose (see build_card)
    inscene.json                                the publisher's declaration (licences, consent, ...)
    data/<subset>/index.json                    shard index of the subset (inscene.shards format)
    data/<subset>/<split>/<subset>-NNNNN.tar    WebDataset shard (~1 GB), members {key}.{field}
    data/<subset>/<split>/<subset>-NNNNN.parquet  manifest: one row per sample, sha256 per member
    data/<subset>/<split>/<subset>-NNNNN.tar.json sidecar: count, bytes, sha256 of the tar

One card ``config`` per subset (``synthetic``, ``real``, ``nonref``, ``test-real``, ``identities``,
or any other subset found), ``data_files`` per split, and ``dataset_info.features`` declaring the
union of the columns of all of its splits (HF's webdataset builder otherwise infers the features
from the first few samples of one split and silently drops columns the others have, e.g. ``lq1.png``
of K-version training samples). HF split names must match ``\\w+(\\.\\w+)*``: a shard folder such
as ``val-synthetic`` is published as split ``val_synthetic``.

**Identity references** live in subset ``identities``: one sample per reference image. Those of
filter-real and develop-raw carry a :class:`~inscene.schema.Sample` record (``Sample.to_meta()``)
with ``identity_id`` set, plus any :class:`~inscene.schema.Identity` fields as extra columns
(``pseudonymised``, ``source_id``); build-synthetic's carry an ``identity`` field holding an
:class:`~inscene.schema.Identity` (the loader returns whichever record the row has). The
loader joins them to samples by ``identity_id``, preferring the identities split of the same name.

**The declaration** (``inscene.json`` at the root of an input folder, or ``--declaration FILE``;
the published copy is ``inscene.json`` at the repo root), see :class:`Declaration`::

    {"format": "inscene-declaration/1",
     "subsets": {
       "synthetic": {"license": "other", "license_name": "flux-1-dev-non-commercial-license",
                     "license_link": "https://...", "source": "InfiniteYou on FLUX.1-dev"},
       "real": {"license": "cc-by-nc-4.0", "pseudonymisation": "hmac-sha256",
                "consent": "Every person pictured agreed in writing to ..."}},
     "columns": {"identity_similarity": "ArcFace cosine similarity to the reference (§6.1)"}}

**Privacy gate** (:func:`publish` refuses, exit 2, naming every offending sample): an image member
carrying EXIF/XMP GPS, serial numbers, owner names, maker notes or trailing data
(:func:`inscene.imageio.private_metadata`); a non-empty metadata field named like a location, serial
number or owner (``gps*``, ``latitude``, ``*serial*``, ``owner`` ...); a subset without a declared
licence; a subset of real people (``real``, ``nonref``, ``test-real``, ``identities`` and any unknown
subset, unless declared ``"real": false``) without a consent statement; real identity ids that are
not pseudonyms, a real subset with identity ids but no declared ``"pseudonymisation": "hmac-sha256"``,
a non-empty ``source_id`` on a real identity (it would publish the mapping), a ``pseudonymised``
flag that is false, or a ``source`` that is a local path (gallery folders are often named after the
person).

**Pseudonyms** are ``id-`` + the first 16 hex digits of HMAC-SHA256(salt, ``"identity:" + real id``)
(:func:`pseudonymise`; the same scheme as ``filter-real --pseudonymise`` and ``develop-raw
--pseudonymise``, which also replace keys and sources by pseudonyms). The salt is a secret
the publisher keeps outside every dataset folder (:func:`load_salt` refuses one inside them); the
mapping never leaves the machine: only allowlisted files (shards, manifests, sidecars, indexes, the
card and the declaration) are staged and uploaded.

**Where input shards go** (:func:`_target`, overridable with ``--map``, see :func:`parse_mapping`):
reference subsets (``refs``, as filter-real and develop-raw write them) -> config ``identities``;
``test/real`` (develop-raw's phone captures) -> ``test-real``/``test``; others keep their names.
``--map SPLIT/SUBSET=CONFIG/SPLIT`` moves those shards of every input folder,
``--map DIR:SPLIT/SUBSET=CONFIG/SPLIT`` those of the input folder DIR only, and ``=-`` leaves them
out. Two folders with the same sample keys in one config and split (build-synthetic's ``val`` and
its ``inscene degrade`` copy) are refused with the ``--map DIR:SPLIT/SUBSET=-`` that resolves it::

    inscene publish out/dataset out/val-lq --map out/dataset:val/synthetic=- --dry-run

**The card describes what was recorded**: the synthetic subset's generator, embedder, threshold,
LoRAs and validation identities come from the samples' own metadata and build-synthetic's
``run.json`` (beside its ``dataset/`` folder); the paper's settings are shown beside them, labelled
as the paper's. Subsets under different licences get ``license: other`` in the YAML with a pointer
to the card's per-config licence table (the Hub takes one licence per repo).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import io
import json
import math
import os
import re
import shutil
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from inscene import __version__
from inscene.errors import BadInputError, InsceneError, ShardError

__all__ = [
    "Declaration",
    "GroupStats",
    "PrivacyError",
    "PrivacyProblem",
    "PublishResult",
    "ReferenceIndex",
    "StagedDataset",
    "SubsetDeclaration",
    "UploadStep",
    "ValidationReport",
    "build_card",
    "is_pseudonym",
    "load",
    "load_declaration",
    "load_salt",
    "pseudonymise",
    "publish",
    "stage",
    "summary_table",
    "upload",
    "upload_plan",
    "validate_folder",
]

DECLARATION_NAME = "inscene.json"
DECLARATION_FORMAT = "inscene-declaration/1"
STATE_NAME = ".inscene-publish.json"
STATE_FORMAT = "inscene-publish/1"
DATA_DIR = "data"
IDENTITIES = "identities"

#: Subsets in Table 1's order; ``identities`` holds the reference images.
SUBSETS = ("nonref", "synthetic", "real", "test-real", IDENTITIES)
SUBSET_INFO: dict[str, dict[str, Any]] = {
    "synthetic": {
        "real": False,
        "category": "Synthetic",
        # the card describes the generator and filter the samples record (_synthetic_description)
        "description": "Full-body scenes of reference identities generated from prompts and kept when the "
        "generated face matches the reference (§4.1, §6.1).",
    },
    "real": {
        "real": True,
        "category": "Real",
        "description": "Gallery photos of known identities, filtered for size, face content and quality (§6.2).",
    },
    "nonref": {
        "real": True,
        "category": "Real",
        "description": "Human-centric CC12M photographs without identity references, filtered like the "
        "gallery photos (non-reference training set, §4.1).",
    },
    "test-real": {
        "real": True,
        "category": "Real",
        "description": "Phone captures with authentic degradations (no ground truth) of identities with "
        "clean gallery references (§4.1 'Test data', §6.3).",
    },
    IDENTITIES: {
        "real": True,
        "category": "References",
        "description": "Clean reference images of every identity, one sample per image, joined to the other "
        "subsets by identity_id.",
    },
}
_SPLIT_ORDER = ("train", "val", "validation", "test")
_SPLIT_LABEL = {"train": "Train", "val": "Validation", "validation": "Validation", "test": "Test"}

#: Table 1 of the paper: (split, subset) -> (#images, #IDs, C-IQA, M-IQA, MUSIQ).
PAPER_TABLE1: list[tuple[str, str, str, int, int | None, float | None, float | None, float | None]] = [
    ("Train", "Non-reference", "Real", 29_697, None, 0.6935, 0.4641, 69.8439),
    ("Train", "Reference", "Synthetic", 11_266, 905, 0.7191, 0.4442, 73.7415),
    ("Train", "Reference", "Real", 16_486, 914, 0.6775, 0.4972, 74.6676),
    ("Train", "Total (Train)", "Mix", 57_449, 1_819, 0.6967, 0.4685, 72.7510),
    ("Test", "InScene Validation", "Synthetic", 1_329, 100, 0.7183, 0.4441, 73.6618),
    ("Test", "InScene Validation", "Real", 524, 31, 0.6435, 0.4906, 75.9653),
    ("Test", "InScene Test", "Real", 100, 10, None, None, None),
]

CITATION = """@article{kazerouni2026face2scene,
  title   = {Face2Scene: Using Facial Degradation as an Oracle for Diffusion-Based Scene Restoration},
  author  = {Kazerouni, Amirhossein and Suin, Maitreya and Aumentado-Armstrong, Tristan and Honari, Sina and
             Walia, Amanpreet and Mohomed, Iqbal and Derpanis, Konstantinos G. and Taati, Babak and
             Levinshtein, Alex},
  journal = {arXiv preprint arXiv:2603.16570},
  year    = {2026}
}"""

#: No-reference IQA means shown in the counts table, and the metadata names recognised for each
#: (optionally prefixed ``m.``, ``m_``, ``iqa_`` or ``iqa.``: decision-log and pipeline spellings).
IQA_COLUMNS: dict[str, tuple[str, ...]] = {
    "C-IQA": ("clipiqa", "clip_iqa", "clip-iqa", "c_iqa"),
    "M-IQA": ("maniqa", "man_iqa", "m_iqa"),
    "MUSIQ": ("musiq",),
}
_IQA_PREFIXES = ("", "m.", "m_", "iqa_", "iqa.")

PSEUDONYM_PREFIX = "id-"
PSEUDONYM_RE = re.compile(r"^id-[0-9a-f]{16}$")
_MIN_SALT_BYTES = 16
_HF_SPLIT_RE = re.compile(r"^\w+(\.\w+)*$")
_LICENSE_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]*$")
_URL_RE = re.compile(r"^[a-z][a-z0-9+.\-]*://", re.IGNORECASE)
_REPO_ID_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*/[\w.\-]+$")
_FEATURE_BATCH = 256

# Member files that may leave the machine. Anything else in the staging folder is never uploaded.
_SHARD_FILE_PATTERNS = ("*.tar", "*.parquet", "*.tar.json")

META_DOCS: dict[str, str] = {
    "schema_version": "Version of the record layout (inscene.schema).",
    "key": "Sample key (the same as __key__).",
    "split": "Split the producing pipeline assigned (train / val / test ...).",
    "subset": "Subset the sample belongs to (synthetic, real, nonref, test-real, identities).",
    "width": "Image width in pixels.",
    "height": "Image height in pixels.",
    "identity_id": "Identity shown; joins to the identities config ('' when none). Pseudonymised real "
    "identities are HMAC-SHA256 pseudonyms (id-...); build-synthetic's are the source identity dataset's "
    "ids (CelebRef-HQ File IDs in the paper); see Privacy for what this copy holds.",
    "prompt": "Generation prompt (synthetic scenes, §6.1 Figure 5; '' otherwise).",
    "n_faces": "Number of faces in faces (filter-real: the face the crop was made around plus the other detected "
    "faces lying wholly inside the crop).",
    "face_box": "Main face's box [x1, y1, x2, y2] in pixels of the stored image, as JSON ('' when no face): the "
    "largest face; filter-real: the face the crop was made around (the largest, or the best detector score "
    "with --face score).",
    "face_landmarks": "Main face's (face_box's) 5 landmarks [[x, y], ...]: left eye, right eye, nose, left and "
    "right mouth corner, left/right as seen in the image; JSON ('' when no face).",
    "faces": "Every detected face as a JSON list: box, 5 landmarks, optional 68 landmarks, score, backend.",
    "degradation": "The replayable degradation operator (DegradationParams JSON) of a one-version LQ ('' when "
    "none).",
    "source": "Where the image came from: file name, URL, tar member (<tar>#<member>) or generator call; "
    "'pseudonymised:<key>' when filter-real / develop-raw --pseudonymise replaced it (a path can name the "
    "person).",
    "sha256": "sha256 of the original bytes the sample was made from.",
    "backends": "Role -> backend behind each value, as JSON (detector, generator, IQA, decoder ...).",
    "seed": "Seed of any random choice made for this sample (-1 when none).",
    "lq_versions": "Number of stored LQ versions (lq0 ... lq{K-1}); §4.1: 1 for validation, 5 for training.",
    "lq_output": "'gt': each LQ resized back to the HQ size (bicubic); 'lq': kept at HQ size / scale.",
    "lq_params": "DegradationParams of every LQ version, as a JSON list.",
    "source_id": "Id in the source dataset (synthetic identities: CelebRef-HQ File ID; empty for real people).",
    "pseudonymised": "True when identity_id is an HMAC pseudonym of the real id.",
    "references": "Keys of this identity's reference images.",
    "reference_index": "Index of this reference image among its identity's references.",
    # build-synthetic (§6.1, Figure 5)
    "file_id": "File ID of the identity: its folder name in the reference set (CelebRef-HQ identity index in the "
    "paper, §6.1 Figure 5).",
    "reference_key": "Key of the reference image (identities config) the scene was generated from.",
    "identity_similarity": "Identity similarity of the generated face to the reference used for generation "
    "(embedder in identity_embedder; ArcFace cosine in the paper, §6.1 Figure 5).",
    "identity_similarity_mean": "Mean identity similarity of the generated face over all of the identity's usable "
    "references.",
    "identity_similarity_max": "Highest identity similarity of the generated face over all of the identity's usable "
    "references.",
    "identity_embedder": "Face embedder behind identity_similarity* (the paper: ArcFace; dlib-resnet is the "
    "embedded offline one).",
    "identity_threshold": "Keep threshold the scene passed (the paper: ArcFace >= 0.55, §6.1; otherwise the "
    "embedder's own).",
    "attempt": "Number of the identity's generation attempt that produced the scene (rejected attempts are not "
    "published).",
    "prompt_source": "Where the prompt came from: 'builder' (the seeded two-subject + two-background-sentence "
    "builder, Figure 5) or 'file:NAME:LINE' (--prompts).",
    "tags": "Scene tags of the prompt as a JSON list (the scene-diversity word cloud, Figure 4).",
    "face_landmarks68": "Largest face's 68 landmarks [[x, y], ...] as JSON ('' when the detector gives none).",
    "generator": "Generator that made the scene (infiniteyou is the paper's; compose is an offline stand-in).",
    "generator_version": "Version of the generator code.",
    "generator_config": "Every generator option that shaped the image (weights stage, steps, guidance, "
    "resolution ...), as JSON.",
    "loras": "LoRAs applied with their scales, as a JSON list (the paper: the anti-blur LoRA).",
    "t_generate_s": "Seconds spent generating the image (a batch's time shared among its images).",
    "t_filter_s": "Seconds spent detecting, embedding and filtering the image.",
    "identity": "The identity's Identity record as JSON (identity_id, source_id, pseudonymised, references, "
    "split).",
    "usable": "True when a face was found in the reference (only usable references condition the generator).",
    "reason": "Why a reference is not usable ('' when it is).",
    # develop-raw (§4.1 'Test data', §6.3)
    "group": "Capture group: the --groups tag, else the ISO group (iso3200 / iso1600 / iso800, §6.3).",
    "iso_group": "ISO group from the capture metadata (iso3200 / iso1600 / iso800, §6.3).",
    "capture_make": "Camera make from the RAW metadata.",
    "capture_model": "Camera model from the RAW metadata.",
    "capture_iso": "ISO speed of the capture.",
    "capture_exposure_time": "Exposure time in seconds.",
    "capture_f_number": "Aperture (f-number).",
    "capture_focal_length": "Focal length in mm.",
    "capture_timestamp": "Capture time from the RAW metadata (no location is ever recorded).",
    "develop": "Development parameters of the RAW (demosaic, white balance, gamma, brightness, highlights, bit "
    "depth ...), as JSON.",
    "decoder": "Decoder that read the RAW (LibRaw via rawpy, or tifffile + imagecodecs for JPEG-XL DNGs).",
    "raw_format": "RAW format read: dng, or the file suffix LibRaw read (nef, cr2 ...).",
    "raw_compression": "Compression of the raw data (DNG: none, JPEG, JPEG-XL ...; '' for other formats).",
    "raw_bytes": "Size of the RAW file in bytes.",
    "orientation": "LibRaw orientation code applied from the file (0 none, 3 180°, 5 90° CCW, 6 90° CW).",
    "no_face": "True when no face was detected in the capture (kept, flagged).",
    "bit_depth": "Bits per sample of the stored image (8 or 16).",
    "ref_index": "Index of this reference image among its identity's references.",
    # filter-real (§6.2 Figure 6: gallery photos; §4.1 'Real-world training data': CC12M)
    "filter_profile": "filter-real profile that kept the photo: 'gallery' (identity gallery, §6.2 thresholds; "
    "subset real) or 'cc12m' (CC12M photos without references, §4.1; subset nonref).",
    "orig_width": "Width in pixels of the input photo (EXIF orientation applied), before filter-real's resize "
    "and crop.",
    "orig_height": "Height in pixels of the input photo (EXIF orientation applied), before filter-real's resize "
    "and crop.",
    "short_side": "Shorter side of the input photo in pixels, min(orig_width, orig_height): filter-real's Stage 1 "
    "size check (§6.2 keeps >= 1000 px for gallery photos; §4.1 >= 1024 px for CC12M).",
    "crop_box": "The square crop [x1, y1, x2, y2] in pixels of the input photo resized to min(H, W) = crop size "
    "(1024 in §6.2 Stage 1), as JSON: along the longer side, holding the whole face box and centred on it as "
    "far as the photo allows (§4.1: not a centre crop).",
    "face_area_fraction": "Area of face_box / area of the crop, a fraction (0-1, not %): filter-real's Stage 2 "
    "content check (§6.2 keeps >= 0.01, i.e. 1%; measured on the Stage 1 crop).",
    "face_area_fraction_orig": "Area of the face box / area of the whole input photo before cropping, a "
    "fraction (0-1); recorded beside face_area_fraction, not thresholded.",
    "blur_face": "Sharpness of the face: variance of the Laplacian (OpenCV, ksize=1) of the 8-bit gray face_box "
    "region downscaled to at most 256 px (setting in backends.blur_face); higher is sharper. filter-real's "
    "Stage 2 blur check: §6.2 names the measure (after its ref. [15]) but no threshold; the toolkit keeps "
    ">= 35 (real_filter.min_blur_face).",
    "blur_image": "Sharpness of the whole crop: variance of the Laplacian (OpenCV, ksize=1) of the 8-bit gray "
    "crop at full size (backends.blur); higher is sharper. filter-real's Stage 2 blur check: §6.2 names the "
    "measure but no threshold; the toolkit keeps >= 20 (real_filter.min_blur_image).",
    "iqa": "Stage 3 scores the photo was kept on: 'paper' (MUSIQ, CLIP-IQA and MANIQA from pyiqa, §6.2 Stage 3 "
    "/ §4.1; columns musiq, clipiqa, maniqa) or 'piqe' (the embedded weight-free PIQE fallback, column piqe; "
    "not the paper's criterion).",
    "piqe": "PIQE no-reference distortion score, 0-100 (lower is better), from pyiqa's weight-free PIQE "
    "(version in backends.piqe): filter-real's Stage 3 fallback when the MUSIQ / CLIP-IQA / MANIQA weights "
    "are absent, kept <= 50 by default (real_filter.max_piqe, PIQE's 'fair' limit); not in the paper.",
    "caption": "Caption of a WebDataset input (its .txt sidecar, e.g. CC12M fetched with img2dataset); '' when "
    "the input had none.",
    "url": "Original URL of a WebDataset input (the url field of its img2dataset .json sidecar); '' when none.",
}
_IQA_DOCS = {
    "C-IQA": "CLIP-IQA no-reference quality, 0-1 (higher is better); filter-real scores it with pyiqa's clipiqa "
    "(CLIP RN50; version in backends.clipiqa). §6.2 Stage 3 and §4.1 keep >= 0.65.",
    "M-IQA": "MANIQA no-reference quality, 0-1 (higher is better); filter-real scores it with pyiqa's maniqa "
    "(KonIQ-10k; version in backends.maniqa). §6.2 Stage 3 and §4.1 keep >= 0.40.",
    "MUSIQ": "MUSIQ no-reference quality, 0-100 (higher is better); filter-real scores it with pyiqa's musiq "
    "(KonIQ-10k; version in backends.musiq). §6.2 Stage 3 and §4.1 keep >= 65.",
}


# --------------------------------------------------------------------------------------------
# declaration


class SubsetDeclaration(BaseModel):
    """What the publisher declares about one subset.

    Attributes:
        license: Hub licence id (``cc-by-4.0``, ``cc-by-nc-4.0``, ``other`` ...).
        license_name: short name of an ``other`` licence (required with ``other``).
        license_link: where that licence's text is.
        real: photographs of real people (default: every subset except ``synthetic``).
        consent: how consent / the right to publish was obtained (required when ``real``).
        pseudonymisation: how real identity ids were made (``hmac-sha256``: :func:`pseudonymise`).
        source: where the images come from (shown on the card).
        description: replaces the subset's default description on the card.
    """

    model_config = ConfigDict(extra="forbid")

    license: str | None = None
    license_name: str | None = None
    license_link: str | None = None
    real: bool | None = None
    consent: str | None = None
    pseudonymisation: Literal["hmac-sha256"] | None = None
    source: str | None = None
    description: str | None = None

    @field_validator("license")
    @classmethod
    def _license_id(cls, v: str | None) -> str | None:
        if v is not None and not _LICENSE_RE.match(v):
            raise ValueError(f"licence {v!r} is not a Hub licence id (lowercase, e.g. cc-by-4.0 or other)")
        return v


class Declaration(BaseModel):
    """The publisher's declaration: licences, consent and pseudonymisation per subset, column docs.

    No field holds a secret (unknown fields are an error, so a stray ``salt`` key is refused).
    """

    model_config = ConfigDict(extra="forbid")

    format: Literal["inscene-declaration/1"] = DECLARATION_FORMAT
    pretty_name: str = "InScene"
    subsets: dict[str, SubsetDeclaration] = Field(default_factory=dict)
    columns: dict[str, str] = Field(default_factory=dict, description="Extra column descriptions for the card.")

    def subset(self, name: str) -> SubsetDeclaration:
        """The declaration of ``name`` (an empty one when absent)."""
        return self.subsets.get(name) or SubsetDeclaration()

    def is_real(self, name: str) -> bool:
        """True when ``name`` holds photographs of real people (declared, or the subset's default)."""
        declared = self.subset(name).real
        if declared is not None:
            return declared
        return SUBSET_INFO.get(name, {}).get("real", True)


def _read_declaration(path: Path) -> Declaration:
    try:
        return Declaration.model_validate_json(path.read_bytes())
    except OSError as exc:
        raise BadInputError(f"cannot read declaration {path}: {exc}") from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise BadInputError(f"invalid declaration {path}: {where}: {first['msg']}") from None


def load_declaration(dirs: Sequence[Path], path: Path | None = None) -> Declaration:
    """Merge the ``inscene.json`` of every input folder, then ``path`` on top.

    Raises:
        BadInputError: an unreadable or invalid declaration, or two folders declaring the same
            subset differently.
    """
    merged = Declaration()
    origin: dict[str, Path] = {}
    found = [Path(d) / DECLARATION_NAME for d in dirs if (Path(d) / DECLARATION_NAME).is_file()]
    for file in found:
        decl = _read_declaration(file)
        for name, sub in decl.subsets.items():
            if name in merged.subsets and merged.subsets[name] != sub:
                raise BadInputError(
                    f"subset {name!r} is declared differently in {origin[name]} and {file}; keep one declaration"
                )
            merged.subsets[name] = sub
            origin[name] = file
        merged.columns.update(decl.columns)
        if decl.pretty_name != "InScene":
            merged.pretty_name = decl.pretty_name
    if path is not None:
        decl = _read_declaration(Path(path))
        merged.subsets.update(decl.subsets)
        merged.columns.update(decl.columns)
        merged.pretty_name = decl.pretty_name
    return merged


# --------------------------------------------------------------------------------------------
# pseudonyms


def pseudonymise(real_id: str, salt: bytes) -> str:
    """The published pseudonym of a real identity id: ``id-`` + 16 hex digits of HMAC-SHA256.

    Args:
        real_id: the id known on this machine (a name, a gallery folder, a capture session).
        salt: the publisher's secret (>= 16 bytes), kept outside every dataset folder.

    Raises:
        BadInputError: a salt shorter than 16 bytes or an empty id.
    """
    if not isinstance(salt, (bytes, bytearray)) or len(salt) < _MIN_SALT_BYTES:
        raise BadInputError(f"the pseudonym salt must be at least {_MIN_SALT_BYTES} bytes")
    if not real_id:
        raise BadInputError("cannot pseudonymise an empty identity id")
    digest = hmac.new(bytes(salt), f"identity:{real_id}".encode(), hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest[:16]


def is_pseudonym(identity_id: str) -> bool:
    """True when ``identity_id`` has the form :func:`pseudonymise` gives."""
    return bool(PSEUDONYM_RE.match(identity_id or ""))


def load_salt(path: str | os.PathLike, *, forbidden: Sequence[str | os.PathLike] = ()) -> bytes:
    """Read the pseudonym salt from a file outside every dataset folder.

    Create one with ``python -c "import secrets; print(secrets.token_hex(32))" > ~/.inscene-salt``.

    Args:
        path: the salt file (its bytes, surrounding whitespace stripped).
        forbidden: folders the salt must not be inside (the dataset folders, the staging folder).

    Raises:
        BadInputError: missing, too short, or inside a forbidden folder.
    """
    file = Path(path).expanduser().resolve()
    for root in forbidden:
        root = Path(root).expanduser().resolve()
        if file == root or root in file.parents:
            raise BadInputError(f"the salt file {file} is inside {root}: keep it outside every dataset folder")
    try:
        salt = file.read_bytes().strip()
    except OSError as exc:
        raise BadInputError(f"cannot read the salt file {file}: {exc}") from exc
    if len(salt) < _MIN_SALT_BYTES:
        raise BadInputError(f"the salt in {file} is shorter than {_MIN_SALT_BYTES} bytes")
    return salt


# --------------------------------------------------------------------------------------------
# privacy gate


@dataclass(frozen=True)
class PrivacyProblem:
    """One reason not to publish: ``where`` is ``subset/split/key`` or ``subset NAME``."""

    where: str
    reason: str

    def line(self) -> str:
        return f"{self.where}: {self.reason}"


class PrivacyError(InsceneError):
    """The privacy gate refused to publish (exit 2); the message names every problem."""

    exit_code = 2

    def __init__(self, problems: Sequence[PrivacyProblem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  {p.line()}" for p in self.problems)
        super().__init__(f"privacy gate: refusing to publish ({len(self.problems)} problem(s)):\n{lines}")


def check_declaration(subsets: Sequence[str], declaration: Declaration) -> list[PrivacyProblem]:
    """Licence and consent problems of the subsets about to be published."""
    problems = []
    for name in subsets:
        sub = declaration.subset(name)
        where = f"subset {name}"
        if not sub.license:
            problems.append(
                PrivacyProblem(where, f"no licence declared ({DECLARATION_NAME}: subsets.{name}.license)")
            )
        elif sub.license == "other" and not sub.license_name:
            problems.append(PrivacyProblem(where, f"licence 'other' needs subsets.{name}.license_name"))
        if declaration.is_real(name) and not (sub.consent or "").strip():
            problems.append(
                PrivacyProblem(
                    where,
                    f"photos of real people without a consent statement ({DECLARATION_NAME}: "
                    f"subsets.{name}.consent)",
                )
            )
    return problems


_PRIVATE_META_RE = re.compile(r"gps|latitude|longitude|serial|owner|maker_?note", re.IGNORECASE)


def _meta_problems(where: str, meta: dict[str, Any]) -> list[PrivacyProblem]:
    """Metadata fields that carry a location, a serial number or an owner (any subset)."""
    return [
        PrivacyProblem(where, f"metadata field {k!r} looks like a location, serial number or owner")
        for k, v in meta.items()
        if _PRIVATE_META_RE.search(k) and v not in (None, "", [], 0, False)
    ]


def _is_local_path(source: str) -> bool:
    return bool(source) and not _URL_RE.match(source) and ("/" in source or "\\" in source)


def _private_members(members: dict[str, bytes]) -> list[tuple[str, list[str]]]:
    from inscene.imageio import private_metadata
    from inscene.shards import IMAGE_EXTENSIONS

    found = []
    for name, data in members.items():
        ext = name.rsplit(".", 1)[-1].lower()
        if ext in IMAGE_EXTENSIONS or ext in ("tif", "tiff", "heic", "avif", "gif", "bmp"):
            tags = private_metadata(data)
            if tags:
                found.append((name, tags))
    return found


def _identity_problems(where: str, meta: dict[str, Any]) -> list[PrivacyProblem]:
    """Problems of one sample showing a real person."""
    problems = []
    ident = str(meta.get("identity_id") or "")
    if ident and not is_pseudonym(ident):
        problems.append(
            PrivacyProblem(
                where,
                f"identity_id {ident!r} is not a pseudonym (expected id-<16 hex>, "
                "HMAC-SHA256 with a secret salt: inscene.hub.pseudonymise)",
            )
        )
    if meta.get("source_id"):
        problems.append(PrivacyProblem(where, "source_id is set: it would publish the pseudonym mapping"))
    if meta.get("pseudonymised") is False:
        problems.append(PrivacyProblem(where, "pseudonymised is false for a real identity"))
    source = str(meta.get("source") or "")
    if _is_local_path(source):
        problems.append(
            PrivacyProblem(where, "source is a local path (folders are often named after the person): store a "
                           "file name, a pseudonymous key or a URL")
        )
    return problems


# --------------------------------------------------------------------------------------------
# staging: statistics and features


class _DegradationSummary:
    """Ranges of numeric parameters and counts of categorical ones over DegradationParams records."""

    _SKIP = {"schema_version", "seed"}

    def __init__(self, data: dict[str, Any] | None = None) -> None:
        data = data or {}
        self.records: int = data.get("records", 0)
        self.ranges: dict[str, list[float]] = data.get("ranges", {})
        self.counts: dict[str, dict[str, int]] = data.get("counts", {})

    def add(self, params: Any) -> None:
        if not isinstance(params, dict):
            return
        self.records += 1
        self._walk("", params)

    def _walk(self, path: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if k not in self._SKIP:
                    self._walk(f"{path}.{k}" if path else k, v)
        elif isinstance(value, list):
            for v in value:
                self._walk(f"{path}[]", v)
        elif isinstance(value, bool) or isinstance(value, str):
            bucket = self.counts.setdefault(path, {})
            bucket[str(value)] = bucket.get(str(value), 0) + 1
        elif isinstance(value, (int, float)) and math.isfinite(value):
            lo_hi = self.ranges.setdefault(path, [float(value), float(value)])
            lo_hi[0], lo_hi[1] = min(lo_hi[0], value), max(lo_hi[1], value)

    def merge(self, other: _DegradationSummary) -> None:
        self.records += other.records
        for k, (lo, hi) in other.ranges.items():
            mine = self.ranges.setdefault(k, [lo, hi])
            mine[0], mine[1] = min(mine[0], lo), max(mine[1], hi)
        for k, bucket in other.counts.items():
            mine = self.counts.setdefault(k, {})
            for v, n in bucket.items():
                mine[v] = mine.get(v, 0) + n

    def to_json(self) -> dict[str, Any]:
        return {"records": self.records, "ranges": self.ranges, "counts": self.counts}


@dataclass
class GroupStats:
    """What one (subset, split) of the published repo holds."""

    subset: str
    split: str
    sources: list[str] = field(default_factory=list)
    images: int = 0
    bytes: int = 0
    shards: list[str] = field(default_factory=list)
    identity_ids: list[str] = field(default_factory=list)
    iqa: dict[str, list[float]] = field(default_factory=dict)  # label -> [sum, count]
    iqa_columns: dict[str, str] = field(default_factory=dict)  # label -> column name
    members: dict[str, int] = field(default_factory=dict)
    meta_keys: list[str] = field(default_factory=list)
    backends: dict[str, int] = field(default_factory=dict)
    prompts: int = 0
    with_faces: int = 0
    image_members_checked: int = 0
    degradation: dict[str, Any] = field(default_factory=dict)
    recorded: dict[str, dict[str, int]] = field(default_factory=dict)  # fact -> value -> samples

    @property
    def n_identities(self) -> int:
        return len(self.identity_ids)

    def iqa_mean(self, label: str) -> float | None:
        total, count = self.iqa.get(label, (0.0, 0))
        return total / count if count else None

    @property
    def folder(self) -> str:
        return f"{DATA_DIR}/{self.subset}/{self.split}"


@dataclass
class StagedDataset:
    """A staged repo folder: per-group statistics, features per config, what was declared."""

    out: Path
    groups: list[GroupStats]
    features: dict[str, dict[str, Any]]  # subset -> datasets.Features.to_dict()
    declaration: Declaration
    run_records: dict[str, dict[str, Any]] = field(default_factory=dict)
    config_flat: dict[str, Any] = field(default_factory=dict)
    config_source: str = "toolkit defaults"

    @property
    def subsets(self) -> list[str]:
        return list(dict.fromkeys(g.subset for g in self.groups))

    def splits(self, subset: str) -> list[str]:
        return [g.split for g in self.groups if g.subset == subset]

    def group(self, subset: str, split: str) -> GroupStats:
        for g in self.groups:
            if g.subset == subset and g.split == split:
                return g
        raise KeyError((subset, split))

    def to_json(self) -> dict[str, Any]:
        return {
            "groups": [asdict(g) for g in self.groups],
            "features": self.features,
            "declaration": self.declaration.model_dump(mode="json"),
            "run_records": self.run_records,
            "config_flat": self.config_flat,
            "config_source": self.config_source,
        }

    @classmethod
    def from_json(cls, out: Path, data: dict[str, Any]) -> StagedDataset:
        return cls(
            out=out,
            groups=[GroupStats(**g) for g in data["groups"]],
            features=data["features"],
            declaration=Declaration.model_validate(data["declaration"]),
            run_records=data.get("run_records", {}),
            config_flat=data.get("config_flat", {}),
            config_source=data.get("config_source", "toolkit defaults"),
        )


_MAX_RECORDED_VALUES = 20


def _json_value(value: Any) -> Any:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value


def _recorded_facts(meta: dict[str, Any]) -> dict[str, str]:
    """How a sample was made, as its metadata records it (build-synthetic's Figure-5 fields).

    ``generator``, ``generator_version``, ``generator_stage`` / ``_steps`` / ``_guidance``,
    ``resolution`` (of the generator config), ``loras``, ``identity_embedder``,
    ``identity_threshold`` and ``prompt_source`` (``builder`` or ``file``); absent when not recorded.
    """
    facts: dict[str, str] = {}
    for name in ("generator", "generator_version", "identity_embedder", "identity_threshold"):
        value = meta.get(name)
        if value not in (None, ""):
            facts[name] = f"{value:g}" if isinstance(value, float) else str(value)
    config = _json_value(meta.get("generator_config"))
    if isinstance(config, dict):
        for name in ("stage", "steps", "guidance"):
            if config.get(name) not in (None, ""):
                facts[f"generator_{name}"] = str(config[name])
        if config.get("width") and config.get("height"):
            facts["resolution"] = f"{config['width']}x{config['height']}"
    loras = _json_value(meta.get("loras"))
    if isinstance(loras, list):
        names = [f"{lo.get('lora') or lo.get('name')} x{lo.get('scale')}" if isinstance(lo, dict) else str(lo)
                 for lo in loras]
        facts["loras"] = ", ".join(names) or "none"
    source = meta.get("prompt_source")
    if isinstance(source, str) and source:
        facts["prompt_source"] = source.split(":", 1)[0]
    return facts


class _FeatureAccumulator:
    """The union of the HF ``datasets`` features of every sample of one config.

    Mirrors what HF's webdataset builder does per example (its own decoders and media
    extensions), but over all samples of all splits rather than the first five of one split.
    """

    def __init__(self) -> None:
        from datasets.packaged_modules.webdataset.webdataset import WebDataset

        self._builder = WebDataset
        self._media: dict[str, Any] = {}
        self._batch: list[dict[str, Any]] = []
        self._schema = None

    def add(self, key: str, members: dict[str, bytes], meta: dict[str, Any] | None) -> None:
        import datasets

        b = self._builder
        example: dict[str, Any] = {"__key__": key, "__url__": ""}
        for name, data in members.items():
            ext = name.rsplit(".", 1)[-1].lower()
            if ext in b.IMAGE_EXTENSIONS:
                self._media.setdefault(name, datasets.Image())
            elif ext in b.AUDIO_EXTENSIONS:
                self._media.setdefault(name, datasets.Audio())
            elif ext in b.VIDEO_EXTENSIONS:
                self._media.setdefault(name, datasets.Video())
            elif ext in getattr(b, "MESH_EXTENSIONS", ()):
                self._media.setdefault(name, datasets.Mesh())
            else:
                example[name] = b.DECODERS[ext](data) if ext in b.DECODERS else data
        if meta is not None:
            example["json"] = meta
        self._batch.append(example)
        if len(self._batch) >= _FEATURE_BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        import pyarrow as pa
        from datasets.features.features import cast_to_python_objects

        rows = cast_to_python_objects(self._batch, only_1d_for_numpy=True)
        columns = list(dict.fromkeys(k for row in rows for k in row))  # from_pylist would take the first row's
        try:
            schema = pa.Table.from_pydict({c: [row.get(c) for row in rows] for c in columns}).schema
            self._schema = (
                schema if self._schema is None
                else pa.unify_schemas([self._schema, schema], promote_options="permissive")
            )
        except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
            keys = ", ".join(e["__key__"] for e in self._batch[:3])
            raise BadInputError(f"samples ({keys}, ...) have column types HF datasets cannot unify: {exc}") from exc
        self._batch = []

    def features(self) -> dict[str, Any]:
        """``datasets.Features.to_dict()`` of the union: ``__key__``, ``__url__``, members, ``json``."""
        import datasets

        self._flush()
        inferred = datasets.Features.from_arrow_schema(self._schema) if self._schema is not None else {}
        names = sorted({*inferred, *self._media} - {"__key__", "__url__", "json"})
        ordered = {"__key__": datasets.Value("string"), "__url__": datasets.Value("string")}
        for name in names:
            ordered[name] = self._media.get(name) or inferred[name]
        if "json" in inferred:
            ordered["json"] = inferred["json"]
        return datasets.Features(ordered).to_dict()


def _iqa_column(meta_keys: Sequence[str], label: str) -> str | None:
    lowered = {k.lower(): k for k in meta_keys}
    for prefix in _IQA_PREFIXES:
        for name in IQA_COLUMNS[label]:
            if prefix + name in lowered:
                return lowered[prefix + name]
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


# --------------------------------------------------------------------------------------------
# staging: inputs


@dataclass
class _Input:
    dir: Path
    source_split: str
    source_subset: str
    shards: list[Path]
    count: int
    bytes: int

    @property
    def source(self) -> str:
        return f"{self.source_split}/{self.source_subset}"


#: Shard subsets that hold identity references (filter-real and develop-raw write ``refs``).
REFERENCE_SUBSETS = ("refs", "references", IDENTITIES)
_NAME_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*$")


#: ``--map`` target that leaves the shards out of the published repo.
SKIP = "-"
_MAP_FORMS = "[DIR:]SPLIT/SUBSET=CONFIG/SPLIT or [DIR:]SPLIT/SUBSET=-"


def _folder_key(folder: str | os.PathLike) -> str:
    """An input folder as ``--map`` keys name it: its resolved absolute path."""
    return str(Path(folder).expanduser().resolve())


def parse_mapping(items: Sequence[str] | dict[str, str] | None) -> dict[str, tuple[str, str] | None]:
    """``--map`` entries (or a dict) -> ``{source: (config, split) or None}``.

    ``SPLIT/SUBSET=CONFIG/SPLIT`` publishes the shards ``SPLIT/SUBSET-*.tar`` of every input folder
    as config CONFIG, split SPLIT (key ``"SPLIT/SUBSET"``); ``DIR:SPLIT/SUBSET=...`` only those of
    the input folder DIR (key ``"<DIR resolved>:SPLIT/SUBSET"``); ``...=-`` leaves them out (None).
    A folder-qualified entry wins over a plain one.
    """
    pairs = list(items.items()) if isinstance(items, dict) else [
        tuple(i.split("=", 1)) if "=" in i else (i, "") for i in (items or [])
    ]
    out: dict[str, tuple[str, str] | None] = {}
    for src, dst in pairs:
        folder, colon, spec = src.rpartition(":")
        parts_src = spec.split("/")
        target: tuple[str, str] | None = None
        ok = len(parts_src) == 2 and all(_NAME_RE.match(x) for x in parts_src) and (bool(folder) or not colon)
        if dst.strip() != SKIP:
            parts_dst = dst.split("/")
            ok = ok and len(parts_dst) == 2 and all(_NAME_RE.match(x) for x in parts_dst)
            if ok:
                target = (parts_dst[0], _hf_split(parts_dst[1]))
        if not ok:
            raise BadInputError(f"--map {src}={dst}: expected {_MAP_FORMS}, e.g. test/real=test-real/test or "
                                "out/dataset:val/synthetic=-")
        out[f"{_folder_key(folder)}:{spec}" if colon else spec] = target
    return out


def _target(
    split: str, subset: str, dir_splits: set[str], mapping: dict[str, tuple[str, str] | None],
    folder: str | os.PathLike | None = None,
) -> tuple[str, str] | None:
    """Where the shards ``split/subset-*.tar`` of one folder are published: ``(config, split)``, None: left out.

    ``--map`` entries first (for ``folder``, then for every folder). Defaults: reference subsets
    (``refs``) go to ``identities`` (a ``identities/refs`` shard folder, as develop-raw writes it, to
    the folder's one other split, else ``all``); ``test/real`` (develop-raw's phone captures) is
    ``test-real/test``; everything else keeps its names.
    """
    if folder is not None and f"{_folder_key(folder)}:{split}/{subset}" in mapping:
        return mapping[f"{_folder_key(folder)}:{split}/{subset}"]
    if f"{split}/{subset}" in mapping:
        return mapping[f"{split}/{subset}"]
    if subset in REFERENCE_SUBSETS:
        if split == IDENTITIES:
            others = sorted(dir_splits - {IDENTITIES})
            split = others[0] if len(others) == 1 else "all"
        return IDENTITIES, _hf_split(split)
    if split == "test" and subset == "real":
        return "test-real", "test"
    return subset, _hf_split(split)


def _hf_split(name: str) -> str:
    split = re.sub(r"[^\w.]", "_", name)
    if not _HF_SPLIT_RE.match(split):
        raise BadInputError(f"split folder {name!r} cannot be an HF split name (letters, digits, '_' and '.')")
    return split


def _split_rank(split: str) -> tuple[int, str]:
    return (_SPLIT_ORDER.index(split) if split in _SPLIT_ORDER else len(_SPLIT_ORDER), split)


def _subset_rank(subset: str) -> tuple[int, str]:
    return (SUBSETS.index(subset) if subset in SUBSETS else len(SUBSETS) - 1, subset)


def _discover(
    dirs: Sequence[Path], mapping: dict[str, tuple[str, str] | None] | None = None
) -> dict[tuple[str, str], list[_Input]]:
    """``(config, hf split)`` -> inputs, in a deterministic order (identities last).

    Raises:
        BadInputError: a folder without shards, a ``--map`` entry that matches no shards, or
            ``--map`` leaving every shard out.
    """
    from inscene.shards import shard_paths

    mapping = mapping or {}
    used: set[str] = set()
    found: dict[tuple[str, str], list[_Input]] = {}
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise BadInputError(f"not a dataset folder: {d}")
        by: dict[tuple[str, str], list[Path]] = {}
        for tar in shard_paths(d):
            subset = tar.name.rsplit("-", 1)[0]
            by.setdefault((tar.parent.name, subset), []).append(tar)
        if not by:
            raise BadInputError(f"no shards in {d} (expected {{split}}/{{subset}}-NNNNN.tar)")
        dir_splits = {split for split, subset in by if subset not in REFERENCE_SUBSETS}
        for (split, subset), tars in by.items():
            count = size = 0
            for tar in tars:
                size += tar.stat().st_size
                sidecar = tar.with_name(tar.name + ".json")
                with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                    count += int(json.loads(sidecar.read_text())["count"])
            used |= {f"{_folder_key(d)}:{split}/{subset}", f"{split}/{subset}"} & set(mapping)
            target = _target(split, subset, dir_splits, mapping, folder=d)
            if target is not None:
                found.setdefault(target, []).append(_Input(d, split, subset, tars, count, size))
    inputs = {_folder_key(d) for d in dirs}
    for key in sorted(set(mapping) - used):
        folder, _, spec = key.rpartition(":")
        if folder and folder not in inputs:
            raise BadInputError(f"--map {key}: {folder} is not one of the input folders")
        which = f"the input folder {folder} has no" if folder else "no input folder has"
        raise BadInputError(f"--map {key}: {which} {spec}-*.tar shards (SPLIT/SUBSET names a shard folder and a "
                            "subset, e.g. val/synthetic)")
    if not found:
        raise BadInputError("--map left every shard out: nothing to publish")
    return dict(
        sorted(
            found.items(),
            key=lambda kv: (kv[0][0] == IDENTITIES, _subset_rank(kv[0][0]), _split_rank(kv[0][1])),
        )
    )


def _manifest_columns(tar: Path) -> tuple[set[str], set[str]] | None:
    """(meta keys, member fields) from a shard's parquet schema; None without a manifest."""
    import pyarrow.parquet as pq

    path = tar.with_suffix(".parquet")
    if not path.exists():
        return None
    names = set(pq.read_schema(path).names)
    members = {c[len("sha256_"):] for c in names if c.startswith("sha256_") and "size_" + c[len("sha256_"):] in names}
    meta = names - {"__key__"} - {f"sha256_{m}" for m in members} - {f"size_{m}" for m in members}
    return meta, members


def _manifest_hashes(path: Path) -> dict[str, dict[str, str]]:
    """key -> {column: sha256} of every sha256_* column of a manifest."""
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    cols = [c for c in table.column_names if c.startswith("sha256_")]
    keys = table.column("__key__").to_pylist()
    values = {c: table.column(c).to_pylist() for c in cols}
    return {k: {c: values[c][i] for c in cols if values[c][i] is not None} for i, k in enumerate(keys)}


_SECRET_KEY_RE = re.compile(r"salt|token|secret|password|key_?file", re.IGNORECASE)


#: Name of build-synthetic's run record in :attr:`StagedDataset.run_records`.
SYNTHETIC_RUN_RECORD = "build-synthetic run.json"


def _parent_run(d: Path) -> dict[str, Any] | None:
    """The ``run.json`` beside ``d`` when ``d`` is a run's ``dataset/`` folder (a dict), else None."""
    path = d.parent / "run.json"
    if d.name != "dataset" or not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _synthetic_run(d: Path) -> dict[str, Any] | None:
    """build-synthetic's ``run.json`` when ``d`` is the ``dataset/`` folder of a build-synthetic run."""
    data = _parent_run(d)
    options = data.get("options") if data is not None else None
    return data if isinstance(options, dict) and "generator" in options else None


#: Record name of a filter-real run's options and thresholds (its ``run.json``).
FILTER_REAL_RUN_RECORD = "filter-real run.json"


def _filter_real_run(d: Path) -> dict[str, Any] | None:
    """filter-real's ``run.json`` when ``d`` is the ``dataset/`` folder of a filter-real run."""
    data = _parent_run(d)
    return data if data is not None and data.get("command") == "filter-real" else None


def _filter_real_config(run: dict[str, Any], config_flat: dict[str, Any]) -> dict[str, Any]:
    """The run's config with the thresholds it actually applied (its options may override the config)."""
    from inscene.config import InsceneConfig

    flat = dict(config_flat)
    if isinstance(run.get("config"), dict):
        with contextlib.suppress(ValidationError, ValueError, TypeError, AttributeError):
            flat = InsceneConfig.from_flat(run["config"]).flat()
    options = run.get("options") if isinstance(run.get("options"), dict) else {}
    th = options.get("thresholds") if isinstance(options.get("thresholds"), dict) else {}
    profile = options.get("profile", "gallery")
    if "min_short_side" in th:
        flat[f"real_filter.min_short_side_{'cc12m' if profile == 'cc12m' else 'gallery'}"] = th["min_short_side"]
    for key in ("min_face_area_fraction", "min_musiq", "min_clipiqa", "min_maniqa", "max_piqe"):
        if key in th:
            flat[f"real_filter.{key}"] = th[key]
    flat["real_filter.iqa_used"] = run.get("iqa")
    flat["real_filter.profile_used"] = profile
    return flat


def _clean_record(data: dict[str, Any]) -> dict[str, Any]:
    """Scalar settings only; no local paths, no salts, tokens or secrets."""
    return {
        k: v for k, v in data.items()
        if not _SECRET_KEY_RE.search(k)
        and (isinstance(v, (int, float, bool))
             or (isinstance(v, str) and not _is_local_path(v) and not os.path.isabs(v)))
    }


def _run_records(dirs: Sequence[Path]) -> tuple[dict[str, dict[str, Any]], dict[str, Any], str]:
    """Run records found beside the shards (``degrade.json`` ...) and the toolkit config in force.

    A build-synthetic ``dataset/`` folder's run record is its parent's ``run.json`` (its options
    become :data:`SYNTHETIC_RUN_RECORD`; its ``config``, the config in force unless a
    ``config.json`` is recorded). Only scalar settings are kept; values that look like local paths
    (they may name people) and keys about salts, tokens or secrets are dropped: they never leave
    the machine.
    """
    from inscene.config import InsceneConfig

    records: dict[str, dict[str, Any]] = {}
    config_flat = InsceneConfig().flat()
    config_source = "toolkit defaults (no config.json recorded beside the shards)"
    for d in dirs:
        d = Path(d)
        synthetic = _synthetic_run(d)
        if synthetic is not None:
            records[SYNTHETIC_RUN_RECORD] = _clean_record(synthetic["options"])
            if isinstance(synthetic.get("config"), dict):
                with contextlib.suppress(ValidationError, ValueError, TypeError, AttributeError):
                    config_flat = InsceneConfig.from_flat(synthetic["config"]).flat()
                    config_source = "the config recorded in build-synthetic's run.json"
        real_run = _filter_real_run(d)
        if real_run is not None:
            options = real_run.get("options") if isinstance(real_run.get("options"), dict) else {}
            th = options.get("thresholds") if isinstance(options.get("thresholds"), dict) else {}
            records[FILTER_REAL_RUN_RECORD] = _clean_record(
                {**{k: v for k, v in options.items() if k != "thresholds"}, **th,
                 "detector": real_run.get("detector"), "iqa": real_run.get("iqa")})
            config_flat = _filter_real_config(real_run, config_flat)
            config_source = "filter-real's run.json (its config and the thresholds it applied)"
        recorded = None if real_run is not None else next(
            (c for c in (d / "config.json", d.parent / "config.json") if c.is_file()), None)
        if recorded is not None:
            with contextlib.suppress(OSError, ValidationError, ValueError, TypeError, AttributeError):
                config_flat = InsceneConfig.from_flat(json.loads(recorded.read_text())).flat()
                config_source = f"config.json recorded beside {d.name}"
        for file in sorted(d.glob("*.json")):
            if file.name in ("index.json", DECLARATION_NAME):
                continue
            try:
                data = json.loads(file.read_text())
            except (OSError, ValueError):
                continue
            if not isinstance(data, dict):
                continue
            if file.name == "config.json":
                continue
            clean = _clean_record(data)
            if clean:
                records[f"{d.name}/{file.name}"] = clean
    return records, config_flat, config_source


# --------------------------------------------------------------------------------------------
# staging: the pass


def _fingerprint(dirs: Sequence[Path], declaration: Declaration, settings: dict[str, Any]) -> str:
    from inscene.shards import shard_paths

    h = hashlib.sha256()
    h.update(json.dumps([STATE_FORMAT, __version__, settings], sort_keys=True).encode())
    h.update(declaration.model_dump_json().encode())
    for d in dirs:
        d = Path(d).resolve()
        files = [*shard_paths(d), *sorted(d.glob("*.json"))]
        if _synthetic_run(d) is not None:
            files.append(d.parent / "run.json")
        for f in files:
            st = f.stat()
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
            for extra in (f.with_suffix(".parquet"), f.with_name(f.name + ".json")):
                if f.suffix == ".tar" and extra.exists():
                    st = extra.stat()
                    h.update(f"{extra}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _read_state(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / STATE_NAME).read_text())
    except (OSError, ValueError):
        return None


def _prepare_out(out: Path, dirs: Sequence[Path]) -> None:
    out_r = out.resolve()
    for d in dirs:
        d = Path(d).resolve()
        if out_r == d or d in out_r.parents or out_r in d.parents:
            raise BadInputError(f"the output folder {out} overlaps the input folder {d}; use another --out")
    if out.exists():
        if not out.is_dir():
            raise BadInputError(f"--out {out} is a file")
        if any(out.iterdir()) and not (out / STATE_NAME).exists():
            raise BadInputError(f"--out {out} is not empty and was not made by inscene publish; use a new folder")


# Working folders a publish run keeps beside --out (same parent, so a rename can swap them in):
# ``.OUT.tmp-PID`` the new staging, ``.OUT.hf-check-PID`` the HF datasets validation cache,
# ``.OUT.old-PID`` the previous output while it is being replaced.
_SIBLING_TAGS = ("tmp", "hf-check", "old")


def _sibling(out: Path, tag: str) -> Path:
    """This process's working folder ``tag`` beside ``out``."""
    return out.parent / f".{out.name}.{tag}-{os.getpid()}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # a leftover of this process is never in use by another run
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _clean_stale_siblings(out: Path) -> None:
    """Remove the working folders of earlier runs into ``out`` that were killed (their process is gone).

    A previous output caught mid-replacement (``out`` missing, its ``.old`` copy left) is put back.
    """
    if not out.parent.is_dir():
        return
    prefix = f".{out.name}."
    for p in out.parent.iterdir():
        if not p.name.startswith(prefix):
            continue
        tag, _, pid = p.name[len(prefix):].rpartition("-")
        if tag not in _SIBLING_TAGS or not pid.isdigit() or _pid_alive(int(pid)):
            continue
        if tag == "old" and not out.exists():
            p.rename(out)
        else:
            shutil.rmtree(p, ignore_errors=True)


def _replace_folder(new: Path, out: Path) -> None:
    """Move the folder ``new`` to ``out``; the previous ``out`` is deleted only once ``new`` is in place."""
    old = _sibling(out, "old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    try:
        new.rename(out)
    except BaseException:
        if old.exists() and not out.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _clear_staged(out: Path) -> None:
    shutil.rmtree(out / DATA_DIR, ignore_errors=True)
    for name in ("README.md", DECLARATION_NAME, STATE_NAME):
        (out / name).unlink(missing_ok=True)


def stage(
    dirs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    declaration: Declaration,
    *,
    settings: Any = None,
    mapping: Sequence[str] | dict[str, str] | None = None,
    console: Any = None,
    build: str | os.PathLike | None = None,
) -> tuple[StagedDataset, bool]:
    """Assemble the repo folder: reshard for the Hub, run the privacy gate, collect statistics.

    Reuses a complete staging of the same inputs in ``out`` (same files, sizes, mtimes, declaration
    and settings), so rerunning an interrupted ``inscene publish`` goes straight to the upload.

    Args:
        dirs: dataset folders (``{split}/{subset}-NNNNN.tar`` + manifests).
        out: the staging folder (must be absent, empty or an earlier staging).
        build: the folder a new staging is written into (default ``out``; created). :func:`publish`
            builds beside ``out`` and moves the result over ``out`` once it validated, so a failed run
            leaves the previous staging as it was. On failure nothing is left staged in ``build``.
        declaration: merged declaration (:func:`load_declaration`).
        settings: a :class:`~inscene.config.HubSettings` (default: the toolkit's).
        mapping: ``SPLIT/SUBSET=CONFIG/SPLIT`` overrides of where input shards are published
            (defaults: :func:`_target`).
        console: rich console for progress.

    Returns:
        ``(staged, reused)``.

    Raises:
        PrivacyError: the privacy gate found problems (nothing is left staged).
        BadInputError: bad folders, duplicate keys, inconsistent metadata.
        ShardError: a damaged input shard, or a member whose bytes differ from its input manifest.
    """
    from inscene.config import HubSettings
    from inscene.runtime import progress
    from inscene.shards import ShardReader, ShardWriter, write_index

    settings = settings or HubSettings()
    dirs = [Path(d) for d in dirs]
    out = Path(out)
    if not dirs:
        raise BadInputError("give at least one dataset folder")
    _prepare_out(out, dirs)
    targets = parse_mapping(mapping)
    groups_in = _discover(dirs, targets)
    fingerprint = _fingerprint(
        dirs, declaration,
        {**settings.model_dump(mode="json"), "map": {k: list(v) if v else None for k, v in targets.items()}},
    )
    state = _read_state(out)
    if state and state.get("format") == STATE_FORMAT and state.get("fingerprint") == fingerprint and state.get(
        "complete"
    ):
        return StagedDataset.from_json(out, state["staged"]), True

    problems = check_declaration(list(dict.fromkeys(s for s, _ in groups_in)), declaration)
    if problems:
        raise PrivacyError(problems)
    _check_duplicate_keys(groups_in)

    final, out = out, Path(build) if build is not None else out
    if out == final:
        _clear_staged(out)
    else:
        shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / STATE_NAME).write_text(json.dumps({"format": STATE_FORMAT, "fingerprint": fingerprint,
                                              "complete": False}) + "\n")
    run_records, config_flat, config_source = _run_records(dirs)
    features: dict[str, _FeatureAccumulator] = {}
    stats: list[GroupStats] = []
    synthetic_ids: set[str] = set()
    real_ids: set[str] = set()
    undeclared_pseudonyms: set[str] = set()
    problems = []
    try:
        for (subset, split), inputs in groups_in.items():
            g = GroupStats(subset, split, sources=sorted({i.source for i in inputs}))
            stats.append(g)
            acc = features.setdefault(subset, _FeatureAccumulator())
            real = declaration.is_real(subset)
            pseudo_ok = declaration.subset(subset).pseudonymisation == "hmac-sha256"
            union_keys: set[str] = set()
            for inp in inputs:
                for tar in inp.shards:
                    cols = _manifest_columns(tar)
                    if cols is not None:
                        union_keys |= cols[0]
            ids: set[str] = set()
            owner: dict[str, _Input] = {}
            backends: Counter[str] = Counter()
            members: Counter[str] = Counter()
            degradation = _DegradationSummary()
            meta_keys: set[str] = set()
            iqa_cols = {label: _iqa_column(sorted(union_keys), label) for label in IQA_COLUMNS}
            g.iqa_columns = {k: v for k, v in iqa_cols.items() if v}
            total = sum(i.count for i in inputs) or None
            root = out / DATA_DIR / subset
            with ShardWriter(
                root, split, subset, max_count=settings.shard_max_count, max_bytes=settings.shard_max_bytes,
                overwrite=True,
            ) as writer:
                samples = (
                    (inp, s)
                    for inp in inputs
                    for s in ShardReader(inp.dir, split=inp.source_split, subset=inp.source_subset,
                                         on_error="raise", decode_images=False)
                )
                for inp, s in progress(samples, f"staging {subset}/{split}", total=total, console=console):
                    if s.key in owner:
                        raise _duplicate_key_error(s.key, subset, split, owner[s.key], inp)
                    owner[s.key] = inp
                    where = f"{subset}/{split}/{s.key}"
                    meta = dict(s.meta)
                    for k in union_keys - set(meta):
                        meta[k] = None
                    for name, tags in _private_members(s.members):
                        problems.append(PrivacyProblem(where, f"{', '.join(tags)} in image member {name}"))
                    problems.extend(_meta_problems(where, s.meta))
                    g.image_members_checked += sum(
                        1 for n in s.members if n.rsplit(".", 1)[-1].lower() in acc._builder.IMAGE_EXTENSIONS
                    )
                    ident = str(meta.get("identity_id") or "")
                    sample_real = real
                    if subset == IDENTITIES:
                        sample_real = real and (ident in real_ids or ident not in synthetic_ids)
                    elif ident:
                        (real_ids if real else synthetic_ids).add(ident)
                    if sample_real:
                        problems.extend(_identity_problems(where, meta))
                        if ident and not pseudo_ok:
                            undeclared_pseudonyms.add(subset)
                    writer.write(s.key, s.members, meta)
                    acc.add(s.key, s.members, meta if s.meta else None)
                    # statistics
                    g.images += 1
                    if ident:
                        ids.add(ident)
                    meta_keys |= set(meta)
                    members.update(s.members.keys())
                    for label, col in g.iqa_columns.items():
                        v = _number(meta.get(col))
                        if v is not None:
                            acc_iqa = g.iqa.setdefault(label, [0.0, 0])
                            acc_iqa[0] += v
                            acc_iqa[1] += 1
                    for fact, value in _recorded_facts(meta).items():
                        counts = g.recorded.setdefault(fact, {})
                        if value in counts or len(counts) < _MAX_RECORDED_VALUES:
                            counts[value] = counts.get(value, 0) + 1
                    if meta.get("prompt"):
                        g.prompts += 1
                    if _number(meta.get("n_faces")):
                        g.with_faces += 1
                    with contextlib.suppress(ValueError, TypeError, AttributeError):
                        for role, backend in json.loads(meta.get("backends") or "{}").items():
                            backends[f"{role}: {backend}"] += 1
                    # one record per LQ version: the lq<k>.json members, else the sample's own record
                    records = [d for n, d in s.members.items() if re.fullmatch(r"lq\d+\.json", n)]
                    if not records and meta.get("degradation"):
                        records = [meta["degradation"]]
                    for rec in records:
                        with contextlib.suppress(ValueError, TypeError):
                            degradation.add(json.loads(rec))
            g.identity_ids = sorted(ids)
            g.members = dict(sorted(members.items()))
            g.meta_keys = sorted(meta_keys)
            g.backends = dict(backends.most_common())
            g.degradation = degradation.to_json()
            g.shards = [f"{DATA_DIR}/{subset}/{split}/{p.name}" for p in writer.shards]
            g.bytes = sum(p.stat().st_size for p in writer.shards)
            _check_integrity(inputs, writer.shards)
            _check_folder_size(out / DATA_DIR / subset / split, settings.max_files_per_folder)
            write_index(root)
        for subset in sorted(undeclared_pseudonyms):
            problems.append(
                PrivacyProblem(
                    f"subset {subset}",
                    f"real identity ids present but no pseudonymisation declared ({DECLARATION_NAME}: "
                    f"subsets.{subset}.pseudonymisation = \"hmac-sha256\")",
                )
            )
        if problems:
            raise PrivacyError(problems)
    except BaseException:
        # never leave offending or half-written data where an upload could find it
        if out == final:
            _clear_staged(out)
        else:
            shutil.rmtree(out, ignore_errors=True)
        raise

    staged = StagedDataset(
        out=out,
        groups=stats,
        features={name: acc.features() for name, acc in features.items()},
        declaration=declaration,
        run_records=run_records,
        config_flat=config_flat,
        config_source=config_source,
    )
    (out / DECLARATION_NAME).write_text(declaration.model_dump_json(indent=2, exclude_none=True) + "\n")
    (out / STATE_NAME).write_text(
        json.dumps({"format": STATE_FORMAT, "fingerprint": fingerprint, "complete": True,
                    "staged": staged.to_json()}, indent=1, sort_keys=True) + "\n"
    )
    return staged, False


def _duplicate_key_error(key: str, subset: str, split: str, first: _Input, second: _Input) -> BadInputError:
    """A duplicate key in one published config and split, with the ``--map`` that resolves it."""
    import shlex

    if first is second:
        return BadInputError(f"duplicate sample key {key!r} in {subset}/{split}: {first.dir} holds it twice in "
                             f"{first.source}; run `inscene verify {first.dir}`")
    # suggest leaving out the copy with fewer members (build-synthetic's HQ-only val beside its degraded copy)
    drop, keep = (first, second) if _member_count(first) < _member_count(second) else (second, first)
    return BadInputError(
        f"duplicate sample key {key!r} in {subset}/{split}: {first.dir} ({first.source}) and {second.dir} "
        f"({second.source}) both hold it, e.g. build-synthetic's val split and its `inscene degrade` copy. Publish one "
        f"of them: leave the other out with --map {shlex.quote(f'{drop.dir}:{drop.source}={SKIP}')} (or "
        f"--map {shlex.quote(f'{keep.dir}:{keep.source}={SKIP}')}), or publish it under another name with "
        f"--map {shlex.quote(f'{drop.dir}:{drop.source}=CONFIG/SPLIT')}"
    )


def _member_count(inp: _Input) -> int:
    """Member fields per sample of an input (from its first manifest; 0 without one)."""
    cols = _manifest_columns(inp.shards[0]) if inp.shards else None
    return len(cols[1]) if cols is not None else 0


def _check_duplicate_keys(groups: dict[tuple[str, str], list[_Input]]) -> None:
    """Refuse, before copying anything, keys two inputs of one config and split share (from their manifests)."""
    import pyarrow.parquet as pq

    for (subset, split), inputs in groups.items():
        if len(inputs) < 2:
            continue
        owner: dict[str, _Input] = {}
        for inp in inputs:
            for tar in inp.shards:
                manifest = tar.with_suffix(".parquet")
                if not manifest.exists():
                    continue  # checked while staging
                for key in pq.read_table(manifest, columns=["__key__"]).column(0).to_pylist():
                    first = owner.setdefault(key, inp)
                    if first is not inp:
                        raise _duplicate_key_error(key, subset, split, first, inp)


def _check_integrity(inputs: Sequence[_Input], written: Sequence[Path]) -> None:
    """Every member written must hash as its input manifest says (the copy is exact).

    The metadata member is left out: a group gathered from several folders fills the keys some
    of them lack with null, so its bytes may change; every other member is copied byte for byte.
    """
    expected: dict[str, dict[str, str]] = {}
    for inp in inputs:
        for tar in inp.shards:
            manifest = tar.with_suffix(".parquet")
            if manifest.exists():
                expected.update(_manifest_hashes(manifest))
    if not expected:
        return
    for tar in written:
        for key, hashes in _manifest_hashes(tar.with_suffix(".parquet")).items():
            want = expected.get(key)
            if want is None:
                continue
            for col, sha in want.items():
                if col != "sha256_json" and hashes.get(col) != sha:
                    raise ShardError(
                        f"sample {key}: member {col[len('sha256_'):]} differs from its input manifest "
                        "(the input changed or is corrupt; run inscene verify on it)"
                    )


def _check_folder_size(folder: Path, limit: int) -> None:
    n = sum(1 for _ in folder.iterdir())
    if n >= limit:
        raise BadInputError(
            f"{folder} would hold {n} files; the Hub wants fewer than {limit} per folder: raise "
            "hub.shard_max_count / hub.shard_max_bytes"
        )


# --------------------------------------------------------------------------------------------
# the dataset card


def _size_category(n: int) -> str:
    bounds = [(1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M"),
              (10_000_000, "1M<n<10M"), (100_000_000, "10M<n<100M"), (1_000_000_000, "100M<n<1B")]
    for bound, name in bounds:
        if n < bound:
            return name
    return "n>1T" if n >= 10**12 else "1B<n<10B"


def _fmt(value: float | None, digits: int) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


_IQA_DIGITS = {"C-IQA": 4, "M-IQA": 4, "MUSIQ": 4}


def _feature_type(feature: Any) -> str:
    import datasets

    if isinstance(feature, datasets.Image):
        return "image"
    if isinstance(feature, datasets.Value):
        return feature.dtype
    if isinstance(feature, dict):
        return "struct"
    inner = getattr(feature, "feature", None)
    if inner is not None:
        return f"list<{_feature_type(inner)}>"
    return type(feature).__name__.lower()


def _member_doc(name: str) -> str:
    stem, _, ext = name.rpartition(".")
    kind = "image" if ext in ("png", "jpg", "jpeg", "webp") else ext
    if name == "__key__":
        return "Sample key (unique within a subset and split; no dots)."
    if name == "__url__":
        return "The shard file the row was read from."
    if name == "json":
        return "The sample's metadata record (fields below)."
    if stem in ("hq", "gt"):
        return "Clean high-quality image (ground truth), as the source pipeline wrote it."
    m = re.fullmatch(r"lq(\d+)", stem)
    if m and kind == "image":
        return (f"Degraded version {m.group(1)} (Real-ESRGAN-style operator, §4.1), lossless; its parameters are "
                f"in lq{m.group(1)}.json.")
    if m and ext == "json":
        return f"The DegradationParams record that produced lq{m.group(1)} (replayable operator, §4.1)."
    if stem.startswith("ref"):
        return "Reference image of the identity."
    if stem == "lq" and kind == "image":
        return "The degraded image (test-real: the phone capture with its authentic degradations, no ground truth)."
    if not stem and kind == "image":
        return "The image (clean for synthetic, real and nonref; the phone capture for test-real; the reference " \
               "photo for identities)."
    if ext == "txt":
        return "Text member."
    return f"{kind} member."


def _meta_doc(name: str, declaration: Declaration) -> str | None:
    if name in declaration.columns:
        return declaration.columns[name]
    if name in META_DOCS:
        return META_DOCS[name]
    for label in IQA_COLUMNS:
        if _iqa_column([name], label):
            return _IQA_DOCS[label]
    if name.startswith(("m.", "m_")):
        return f"Value '{name[2:]}' measured by a pipeline stage (also in its decision log)."
    return None


def undocumented_columns(staged: StagedDataset) -> list[str]:
    """Metadata columns the card cannot describe (declare them under ``columns``)."""
    keys = sorted({k for g in staged.groups for k in g.meta_keys})
    return [k for k in keys if _meta_doc(k, staged.declaration) is None]


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table1_rows(staged: StagedDataset) -> list[list[str]]:
    rows = []
    by_split: dict[str, list[GroupStats]] = {}
    for g in staged.groups:
        if g.subset != IDENTITIES:
            by_split.setdefault(g.split, []).append(g)
    for split in sorted(by_split, key=_split_rank):
        groups = sorted(by_split[split], key=lambda g: _subset_rank(g.subset))
        for g in groups:
            rows.append(_table1_row(staged, _SPLIT_LABEL.get(split, split), g.subset, [g]))
        if len(groups) > 1:
            rows.append(_table1_row(staged, _SPLIT_LABEL.get(split, split), f"Total ({split})", groups))
    return rows


def _table1_row(staged: StagedDataset, split: str, subset: str, groups: list[GroupStats]) -> list[str]:
    categories = {
        SUBSET_INFO.get(g.subset, {}).get("category") or ("Real" if staged.declaration.is_real(g.subset) else
                                                           "Synthetic")
        for g in groups
    }
    ids = set().union(*(g.identity_ids for g in groups))
    cells = [split, subset, categories.pop() if len(categories) == 1 else "Mix",
             f"{sum(g.images for g in groups):,}", f"{len(ids):,}" if ids else "–"]
    for label in IQA_COLUMNS:
        total = sum(g.iqa.get(label, (0.0, 0))[0] for g in groups)
        count = sum(g.iqa.get(label, (0.0, 0))[1] for g in groups)
        cells.append(_fmt(total / count if count else None, _IQA_DIGITS[label]))
    return cells


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md_escape(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


#: The paper's synthetic subset (§4.1, §6.1, Table 1), shown on the card as the paper's, beside what was recorded.
PAPER_SYNTHETIC = (
    "InfiniteYou (stage-1 weights, `sim_stage1`) on FLUX.1-dev guided by the anti-blur LoRA; ArcFace similarity "
    ">= 0.55 to the reference; 12,595 scenes of 1,005 CelebRef-HQ identities generated, 11,266 images of 905 "
    "identities kept for training and 100 identities (1,329 degraded images) held out for validation"
)


def _merged_recorded(staged: StagedDataset, subset: str = "synthetic") -> dict[str, Counter[str]]:
    merged: dict[str, Counter[str]] = {}
    for g in staged.groups:
        if g.subset == subset:
            for fact, counts in g.recorded.items():
                merged.setdefault(fact, Counter()).update(counts)
    return merged


def _values(recorded: dict[str, Counter[str]], fact: str) -> list[str]:
    return [v for v, _ in recorded.get(fact, Counter()).most_common()]


def _codes(values: Sequence[str]) -> str:
    return " / ".join(f"`{v}`" for v in values)


def _generators(staged: StagedDataset, recorded: dict[str, Counter[str]]) -> list[str]:
    """The generators the synthetic samples record, else the one build-synthetic's run.json names."""
    run_generator = staged.run_records.get(SYNTHETIC_RUN_RECORD, {}).get("generator")
    return _values(recorded, "generator") or ([str(run_generator)] if run_generator else [])


def _synthetic_description(staged: StagedDataset) -> str:
    """The synthetic subset's row: the generator and filter its samples record, and the paper's."""
    rec = _merged_recorded(staged)
    gens = _generators(staged, rec)
    embedders, thresholds = _values(rec, "identity_embedder"), _values(rec, "identity_threshold")
    made = f"generated by {_codes(gens)}" if gens else "generated from prompts (generator not recorded)"
    kept = (f", kept when the {_codes(embedders)} identity similarity to the reference is >= {' / '.join(thresholds)}"
            if embedders and thresholds else "")
    return (f"Full-body scenes of reference identities {made}{kept} (see Construction; the paper's: InfiniteYou on "
            "FLUX.1-dev, ArcFace >= 0.55, §4.1, §6.1).")


def _synthetic_construction(staged: StagedDataset) -> str:
    """The Construction paragraph of the synthetic subset, from its records, then the paper's settings."""
    rec = _merged_recorded(staged)
    run = staged.run_records.get(SYNTHETIC_RUN_RECORD, {})
    gens = _generators(staged, rec)
    details = []
    for fact, label in (("generator_version", "version"), ("generator_stage", "weights"),
                        ("generator_steps", "steps"), ("generator_guidance", "guidance"),
                        ("resolution", "resolution"), ("loras", "LoRAs")):
        values = _values(rec, fact)
        if values:
            details.append(f"{label} {' / '.join(values)}")
    if gens:
        made = f"generated by {_codes(gens)}" + (f" ({'; '.join(details)})" if details else "")
    else:
        made = "generated by a generator the samples do not record"
    prompts = {"builder": "the seeded prompt builder (two sentences on the subject, two on the background)",
               "file": "a prompt file (--prompts)"}
    sources = [prompts.get(v, f"`{v}`") for v in _values(rec, "prompt_source")]
    text = (f"**Synthetic scenes** (§4.1, §6.1), as this copy's samples record them: {made}"
            + (f", from {' and '.join(sources)}" if sources else "") + ". ")
    embedders, thresholds = _values(rec, "identity_embedder"), _values(rec, "identity_threshold")
    if embedders and thresholds:
        text += (f"A scene was kept when the {_codes(embedders)} identity similarity of its face to the reference "
                 f"reached {' / '.join(thresholds)}. ")
    else:
        text += "The identity filter (embedder, threshold) is not recorded in the samples. "
    splits = []
    for g in sorted((g for g in staged.groups if g.subset == "synthetic"), key=lambda g: _split_rank(g.split)):
        ids = f"{g.n_identities:,} {'identity' if g.n_identities == 1 else 'identities'}"
        splits.append(f"{ids} ({g.images:,} image{'' if g.images == 1 else 's'}) in `{g.split}`")
    if splits:
        text += "Identity-disjoint splits: " + ", ".join(splits) + ". "
    if "compose" in gens:
        text += ("`compose` is the toolkit's offline stand-in (it pastes the reference face into a drawn scene), "
                 "not the paper's generator. ")
    if run:
        keys = ("per_identity", "max_attempts", "val_identities", "seed", "score", "embedder", "threshold")
        shown = ", ".join(f"{k}={run[k]}" for k in keys if k in run)
        if shown:
            text += f"build-synthetic options: {shown}. "
    text += f"\n\n*The paper's synthetic subset, for reference (not this copy's settings):* {PAPER_SYNTHETIC}.\n"
    return text


def _licences(staged: StagedDataset) -> list[tuple[str, str | None, str | None]]:
    """The distinct declared ``(license, license_name, license_link)`` of the configs, in config order."""
    out = []
    for name in staged.subsets:
        sub = staged.declaration.subset(name)
        if sub.license:
            other = sub.license == "other"
            out.append((sub.license, sub.license_name if other else None, sub.license_link if other else None))
    return list(dict.fromkeys(out))


#: YAML ``license_name`` when the configs are under different licences (see :func:`card_data`).
PER_CONFIG_LICENSE = "inscene-per-config-licences"


def card_data(staged: StagedDataset) -> Any:
    """The card's YAML metadata as a ``huggingface_hub.DatasetCardData``."""
    import datasets
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    decl = staged.declaration
    licences = _licences(staged)
    total = sum(g.images for g in staged.groups)
    configs = []
    infos = {}
    for subset in staged.subsets:
        splits = staged.splits(subset)
        configs.append({
            "config_name": subset,
            "data_files": [{"split": s, "path": f"{DATA_DIR}/{subset}/{s}/*.tar"} for s in splits],
        })
        split_dict = datasets.SplitDict()
        for s in splits:
            g = staged.group(subset, s)
            split_dict.add(datasets.SplitInfo(name=s, num_examples=g.images, num_bytes=g.bytes))  # tar bytes
        infos[subset] = datasets.DatasetInfo(
            features=datasets.Features.from_dict(staged.features[subset]), splits=split_dict,
            download_size=sum(staged.group(subset, s).bytes for s in splits),
        )
    # The Hub shows one licence per repo: a single one as declared; several as `other` pointing at the
    # card, whose licence table lists each config's (a license_name/link of one config would mislabel the rest).
    extra: dict[str, Any] = {}
    lic: str | None = None
    if len(licences) == 1:
        lic, name, link = licences[0]
        extra.update({k: v for k, v in (("license_name", name), ("license_link", link)) if v})
    elif licences:
        lic = "other"
        extra.update(license_name=PER_CONFIG_LICENSE, license_link="README.md")
    data = DatasetCardData(
        pretty_name=decl.pretty_name,
        license=lic,
        task_categories=["image-to-image"],
        size_categories=[_size_category(total)],
        language=["en"] if any(g.prompts for g in staged.groups) else None,
        tags=["image-restoration", "super-resolution", "reference-based", "faces", "webdataset", "face2scene",
              "arxiv:2603.16570"],
        configs=configs,
        **extra,
    )
    DatasetInfosDict(infos).to_dataset_card_data(data)
    return data


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}" + ("" if n == 1 else "s")


@dataclass
class _IdentityIds:
    """What the identity ids of one subset are, counted from the staged data (not from the declaration)."""

    pseudonyms: int = 0  # ``id-`` + 16 hex digits (:func:`pseudonymise`)
    source: int = 0  # the source identity dataset's ids: a non-real subset's, or shared with one
    other: int = 0  # neither (the privacy gate refuses these in real subsets)


def _identity_ids(staged: StagedDataset) -> dict[str, _IdentityIds]:
    """Per subset, how many of its identity ids are pseudonyms and how many are source-dataset ids.

    Ids of subsets not of real people (``synthetic``: build-synthetic records the source identity
    dataset's File IDs, e.g. CelebRef-HQ's) are source ids, and so are the same ids in a real subset
    such as ``identities`` (the synthetic scenes' references), as the privacy gate lets them through.
    """
    decl = staged.declaration
    ids: dict[str, set[str]] = {}
    for g in staged.groups:
        ids.setdefault(g.subset, set()).update(g.identity_ids)
    synthetic = set().union(*(v for k, v in ids.items() if not decl.is_real(k)))
    kinds = {}
    for subset, subset_ids in ids.items():
        k = kinds[subset] = _IdentityIds()
        for ident in subset_ids:
            if is_pseudonym(ident):
                k.pseudonyms += 1
            elif ident in synthetic or not decl.is_real(subset):
                k.source += 1
            else:
                k.other += 1
    return kinds


def _identity_ids_cell(k: _IdentityIds, declared: str | None) -> str:
    """The licence table's "identity ids" cell: what the ids of one subset are."""
    pseudo = f"{declared} pseudonyms" if declared else "`id-` pseudonyms (scheme not declared)"
    parts = [(k.pseudonyms, pseudo), (k.source, "source-dataset ids"), (k.other, "other ids")]
    parts = [(n, what) for n, what in parts if n]
    if not parts:
        return "–"
    if len(parts) == 1:
        return parts[0][1] + ("" if k.pseudonyms else " (not pseudonyms)")
    return ", ".join(f"{n:,} {what}" for n, what in parts) + " (only the `id-` ones are pseudonyms)"


def _privacy_of_ids(kinds: dict[str, _IdentityIds]) -> str:
    """What the card may say of identity ids, from what they are: pseudonyms only where they are."""
    def names(pred: Any) -> str:
        return ", ".join(f"`{s}`" for s, k in kinds.items() if pred(k))

    text = []
    if any(k.pseudonyms for k in kinds.values()):
        text.append(f"Identity ids of the form `id-` + 16 hex digits (in {names(lambda k: k.pseudonyms)}) are "
                    "HMAC-SHA256 pseudonyms made with a secret salt the publisher keeps; the salt and the mapping "
                    "to real identities are not part of this dataset.")
    if any(k.source for k in kinds.values()):
        text.append(f"{'The other' if text else 'The'} identity ids in {names(lambda k: k.source)} are not "
                    "pseudonyms: they are the ids of the source identity dataset the synthetic scenes were made "
                    "from, as build-synthetic records them (its File IDs, e.g. CelebRef-HQ's; `file_id`).")
    if any(k.other for k in kinds.values()):
        text.append(f"Other identity ids (in {names(lambda k: k.other)}) are neither pseudonyms nor source-dataset "
                    "ids.")
    return " ".join(text)


def build_card(staged: StagedDataset, repo_id: str) -> str:
    """The README.md dataset card: YAML metadata, then what a person needs to use the data.

    Sections: subsets and splits, counts as Table 1 shows them (images, identities, mean CLIP-IQA /
    MANIQA / MUSIQ where measured) beside the paper's, identity references, loading, every
    column, the construction (thresholds, generator, backends, degradation parameters, run
    records), licences/consent/pseudonymisation, integrity, and the citation.
    """
    import datasets
    from huggingface_hub import DatasetCard

    decl = staged.declaration
    cfg = staged.config_flat
    present = set(staged.subsets)
    parts: list[str] = []
    total = sum(g.images for g in staged.groups if g.subset != IDENTITIES)
    parts.append(f"# {decl.pretty_name}\n")
    n_subsets = len([s for s in staged.subsets if s != IDENTITIES])
    parts.append(
        "InScene pairs full-scene photographs of people with clean reference images of the same identity, "
        "for reference-based scene restoration: the dataset of *Face2Scene: Using Facial Degradation as an "
        "Oracle for Diffusion-Based Scene Restoration* ([arXiv 2603.16570](https://arxiv.org/abs/2603.16570)). "
        f"This copy holds {total:,} images in {_count(n_subsets, 'subset')}"
        + (f" and {sum(g.images for g in staged.groups if g.subset == IDENTITIES):,} identity reference images"
           if IDENTITIES in present else "")
        + f". It was assembled with `inscene publish` (inscene {__version__}).\n"
    )

    parts.append("## Subsets and splits\n")
    rows = []
    for subset in staged.subsets:
        sub = decl.subset(subset)
        default = _synthetic_description(staged) if subset == "synthetic" else SUBSET_INFO.get(subset, {}).get(
            "description")
        desc = sub.description or default or "(no description declared)"
        if sub.source:
            desc += f" Source: {sub.source}."
        rows.append([f"`{subset}`", desc, ", ".join(f"`{s}`" for s in staged.splits(subset)), sub.license or "–"])
    parts.append(_md_table(["config", "what it holds", "splits", "licence"], rows) + "\n")
    mapped = [(g, s) for g in staged.groups for s in g.sources if s != f"{g.split}/{g.subset}"]
    if mapped:
        parts.append("Where the shards came from: " + ", ".join(
            f"`{s}-*` shards are config `{g.subset}`, split `{g.split}`" for g, s in mapped)
            + ". Each sample's `json.split` and `json.subset` keep what the producing pipeline wrote.\n")

    parts.append("## Counts (as in Table 1 of the paper)\n")
    header = ["Split", "Subset", "Category", "#Images", "#IDs", "C-IQA ↑", "M-IQA ↑", "MUSIQ ↑"]
    parts.append(_md_table(header, _table1_rows(staged)) + "\n")
    measured = sorted({f"`{c}`" for g in staged.groups for c in g.iqa_columns.values()})
    parts.append(
        "Quality columns are means over the images whose metadata carries the score ("
        + (", ".join(measured) if measured else "none was recorded")
        + "); – where not measured. Table 1 of the paper, for comparison:\n"
    )
    paper_rows = [[a, b, c, f"{n:,}", f"{i:,}" if i else "–", _fmt(ci, 4), _fmt(mi, 4), _fmt(mu, 4)]
                  for a, b, c, n, i, ci, mi, mu in PAPER_TABLE1]
    parts.append(_md_table(header, paper_rows) + "\n")

    if IDENTITIES in present:
        parts.append("## Identity references\n")
        rows = []
        for g in (g for g in staged.groups if g.subset == IDENTITIES):
            rows.append([f"`{g.split}`", f"{g.n_identities:,}", f"{g.images:,}"])
        parts.append(_md_table(["identities split", "identities", "reference images"], rows) + "\n")
        parts.append(
            "Samples carry `identity_id`; the identities config holds one row per reference image with the same "
            "`identity_id`. `inscene.load` joins them (the identities split of the same name first).\n"
        )

    first = next(s for s in ("synthetic", "real", "test-real", "nonref", *staged.subsets) if s in present)
    first_split = staged.splits(first)[0]
    parts.append("## Loading\n")
    parts.append(
        "```python\nfrom datasets import load_dataset\n\n"
        f'ds = load_dataset("{repo_id}", "{first}", split="{first_split}")            # or streaming=True\n'
        f'ds[0]["json"]["identity_id"], ds[0]["json"]["face_box"]\n```\n\n'
        "With the references joined by identity (decoded images, `Sample` records):\n\n"
        "```python\nimport inscene\n\n"
        f'ds = inscene.load("{repo_id}", "{first}", "{first_split}")                 # HF dataset\n'
        f'pipe = inscene.load("{repo_id}", "{first}", "{first_split}", backend="webdataset")  # webdataset pipeline\n'
        'sample = next(iter(pipe)); sample["record"], sample["references"]\n```\n\n'
        f"The shards are plain WebDataset tars (`{DATA_DIR}/<subset>/<split>/<subset>-NNNNN.tar`, members "
        "`{key}.{field}`), readable by `webdataset.WebDataset` as well.\n"
    )

    parts.append("## Columns\n")
    for subset in staged.subsets:
        feats = datasets.Features.from_dict(staged.features[subset])
        rows = [[f"`{name}`", _feature_type(f), _member_doc(name)] for name, f in feats.items()]
        parts.append(f"### `{subset}`\n")
        parts.append(_md_table(["column", "type", "description"], rows) + "\n")
        meta = feats.get("json")
        if isinstance(meta, dict):
            rows = []
            for name, f in meta.items():
                doc = _meta_doc(name, decl) or "(not documented by the publisher)"
                rows.append([f"`json.{name}`", _feature_type(f), doc])
            parts.append(_md_table(["metadata field", "type", "description"], rows) + "\n")

    parts.append("## Construction\n")
    if "synthetic" in present:
        parts.append(_synthetic_construction(staged))
    if present & {"real", "nonref", "test-real"}:
        parts.append(
            "**Real photographs** (§6.2, §4.1): shorter side >= "
            f"{cfg.get('real_filter.min_short_side_gallery', 1000)} px (gallery) / "
            f"{cfg.get('real_filter.min_short_side_cc12m', 1024)} px (CC12M); a detected face; resized to "
            f"min(H, W) = {cfg.get('real_filter.crop_size', 1024)} and cropped to a square keeping the face box; "
            f"face box >= {cfg.get('real_filter.min_face_area_fraction', 0.01):.0%} of the image; a Laplacian-variance "
            + (f"sharpness check; PIQE <= {cfg.get('real_filter.max_piqe', 50.0)} (the toolkit's weight-free "
               "fallback: the paper's IQA weights were not available, so Stage 3 is NOT the paper's).\n"
               if cfg.get("real_filter.iqa_used") == "piqe" else
               f"sharpness check; MUSIQ >= {cfg.get('real_filter.min_musiq', 65.0)}, CLIP-IQA >= "
               f"{cfg.get('real_filter.min_clipiqa', 0.65)}, MANIQA >= {cfg.get('real_filter.min_maniqa', 0.4)}.\n")
        )
    if "test-real" in present:
        isos = cfg.get("raw.iso_groups", (3200, 1600, 800))
        parts.append(
            "**Real test captures** (§4.1, §6.3): phone photographs with authentic blur, noise and compression "
            f"(ISO groups {', '.join(str(i) for i in isos)}), with clean gallery references of each person; no "
            "ground truth.\n"
        )
    parts.append(f"Thresholds as recorded: {staged.config_source}.\n")
    backends: Counter[str] = Counter()
    for g in staged.groups:
        backends.update(g.backends)
    if backends:
        rows = [[_md_escape(k), f"{n:,}"] for k, n in backends.most_common()]
        parts.append("Backends that produced the recorded values (from each sample's `backends`):\n")
        parts.append(_md_table(["role: backend", "samples"], rows) + "\n")
    deg = _DegradationSummary()
    for g in staged.groups:
        deg.merge(_DegradationSummary(g.degradation))
    if deg.records:
        parts.append(
            f"**Degradations** (§4.1; Real-ESRGAN's two-stage pipeline, replayable per sample): {deg.records:,} "
            "operator records. Parameter ranges and values over all of them:\n"
        )
        rows = [[f"`{k}`", f"{lo:g} – {hi:g}" if lo != hi else f"{lo:g}"]
                for k, (lo, hi) in sorted(deg.ranges.items())]
        rows += [[f"`{k}`", ", ".join(f"{v} ×{n:,}" for v, n in sorted(b.items()))]
                 for k, b in sorted(deg.counts.items())]
        parts.append(_md_table(["parameter", "values"], rows) + "\n")
    if staged.run_records:
        parts.append("Run records found beside the shards:\n")
        rows = [[f"`{name}`", ", ".join(f"{k}={v}" for k, v in sorted(rec.items()))]
                for name, rec in sorted(staged.run_records.items())]
        parts.append(_md_table(["record", "settings"], rows) + "\n")

    parts.append("## Licences, consent and privacy\n")
    if len(_licences(staged)) > 1:
        parts.append(
            f"The configs are under different licences (the metadata says `other` / `{PER_CONFIG_LICENSE}`, "
            "pointing here): each config's licence is the one in this table, and using a config means accepting "
            "its licence.\n"
        )
    rows = []
    kinds = _identity_ids(staged)  # claims about ids come from the ids, never from the declaration alone
    for subset in staged.subsets:
        sub = decl.subset(subset)
        lic = sub.license or "–"
        if sub.license == "other":
            lic = f"other: {sub.license_name}" + (f" ({sub.license_link})" if sub.license_link else "")
        rows.append([
            f"`{subset}`", lic, "yes" if decl.is_real(subset) else "no", sub.consent or "–",
            _identity_ids_cell(kinds.get(subset, _IdentityIds()), sub.pseudonymisation),
        ])
    parts.append(_md_table(["config", "licence", "real people", "consent", "identity ids"], rows) + "\n")
    checked = sum(g.image_members_checked for g in staged.groups)
    ids_text = _privacy_of_ids(kinds)
    parts.append(
        f"Every image member ({checked:,}) was checked before publishing for EXIF/XMP GPS, serial numbers, owner "
        "names, maker notes and trailing data; none carries any. " + (ids_text + " " if ids_text else "")
        + "To ask for an image to be removed, open a discussion on this repository.\n"
    )

    parts.append("## Integrity\n")
    parts.append(
        "Beside each tar are a parquet manifest (one row per sample: every metadata field, sha256 and size per "
        "member) and a `.tar.json` sidecar (count, bytes, sha256 of the tar); `data/<subset>/index.json` lists "
        "them. `inscene verify data/<subset>` recomputes every hash.\n"
    )
    parts.append("## Citation\n")
    parts.append(f"```bibtex\n{CITATION}\n```\n")

    body = "\n".join(parts)
    card = DatasetCard("---\n" + card_data(staged).to_yaml() + "\n---\n\n" + body)
    return str(card)


# --------------------------------------------------------------------------------------------
# validation (the dry run)


@dataclass
class ValidationReport:
    """What the dry run checked.

    Attributes:
        rows: ``(config, split)`` -> rows HF datasets produced.
        columns: ``(config, split)`` -> column names HF datasets gave.
        mode: ``full`` (``load_dataset`` into a temporary cache) or ``stream`` (every row streamed).
        problems: one line per failed check.
    """

    rows: dict[tuple[str, str], int] = field(default_factory=dict)
    columns: dict[tuple[str, str], list[str]] = field(default_factory=dict)
    mode: str = "full"
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@contextlib.contextmanager
def _hf_offline() -> Iterator[None]:
    """HF datasets/hub offline for the duration (their import-time settings included), progress bars off."""
    import datasets
    import datasets.config as dconfig
    import huggingface_hub.constants as hconst

    saved_env = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    saved = (dconfig.HF_HUB_OFFLINE, getattr(dconfig, "HF_DATASETS_OFFLINE", None), hconst.HF_HUB_OFFLINE)
    bars = datasets.is_progress_bar_enabled()
    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"
    dconfig.HF_HUB_OFFLINE = True
    dconfig.HF_DATASETS_OFFLINE = True
    hconst.HF_HUB_OFFLINE = True
    datasets.disable_progress_bars()
    try:
        yield
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        dconfig.HF_HUB_OFFLINE, dconfig.HF_DATASETS_OFFLINE, hconst.HF_HUB_OFFLINE = saved
        if bars:
            datasets.enable_progress_bars()


def validate_folder(
    staged: StagedDataset, *, mode: str = "auto", full_max_bytes: int = 2_000_000_000,
    cache_dir: str | os.PathLike | None = None,
) -> ValidationReport:
    """Load every config and split of the staged folder with HF ``datasets`` and parse its card.

    Offline (``HF_HUB_OFFLINE=1``) with a temporary cache that is removed afterwards: ``cache_dir``
    (default ``.OUT.hf-check-PID`` beside the staged folder, never the system temp folder, so what
    a killed run leaves is found and removed by the next ``inscene publish`` into the same folder).

    Args:
        staged: the staged folder.
        mode: ``full`` loads each split into a temporary Arrow cache (every row converted to the
            declared features); ``stream`` streams every row (no cache; images of the first rows
            decoded); ``auto``: full up to ``full_max_bytes`` of shards, stream above.
        full_max_bytes: the ``auto`` threshold.
        cache_dir: the temporary cache (created, then removed with everything in it).
    """
    from datasets.info import DatasetInfosDict
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    out = staged.out
    total_bytes = sum(g.bytes for g in staged.groups)
    if mode == "auto":
        mode = "full" if total_bytes <= full_max_bytes else "stream"
    if mode not in ("full", "stream"):
        raise BadInputError(f"validation mode must be auto, full or stream, got {mode!r}")
    report = ValidationReport(mode=mode)
    problems = report.problems

    card = DatasetCard.load(out / "README.md")
    data = card.data
    for required in ("license", "task_categories", "size_categories", "pretty_name", "configs"):
        if not data.get(required):
            problems.append(f"card: no {required} in the YAML metadata")
    try:
        configs = MetadataConfigs.from_dataset_card_data(data)
        infos = DatasetInfosDict.from_dataset_card_data(data)
    except Exception as exc:  # noqa: BLE001 - any parse failure is the card's problem
        problems.append(f"card: HF datasets cannot parse its metadata: {exc}")
        return report
    for subset in staged.subsets:
        if subset not in configs:
            problems.append(f"card: no config {subset!r}")
        if subset not in infos or infos[subset].features is None:
            problems.append(f"card: no features for config {subset!r}")
    if problems:
        return report

    cache_path = Path(cache_dir) if cache_dir is not None else _sibling(out, "hf-check")
    shutil.rmtree(cache_path, ignore_errors=True)
    cache_path.mkdir(parents=True)
    cache = str(cache_path)
    try:
        with _hf_offline():
            _load_every_split(staged, mode, cache, report)
    finally:
        shutil.rmtree(cache_path, ignore_errors=True)
    return report


def _load_every_split(staged: StagedDataset, mode: str, cache: str, report: ValidationReport) -> None:
    """Load each group of ``staged`` with HF datasets; rows, columns and problems go to ``report``."""
    import datasets

    out = staged.out
    problems = report.problems
    for g in staged.groups:
        where = f"{g.subset}/{g.split}"
        expected_cols = set(datasets.Features.from_dict(staged.features[g.subset]))
        try:
            ds = datasets.load_dataset(str(out), name=g.subset, split=g.split, cache_dir=cache,
                                       streaming=mode == "stream")
            if mode == "full":
                n = len(ds)
                cols = list(ds.column_names)
                if n:
                    row = ds[0]  # decodes the images of the first row
                    _check_row(row, g, where, problems)
            else:
                cols = list(ds.features) if ds.features is not None else []
                n = 0
                for i, row in enumerate(ds.decode(False)):
                    if i == 0:
                        _check_row(_decode_row(row), g, where, problems)
                    n += 1
        except Exception as exc:  # noqa: BLE001 - report what HF datasets could not load
            problems.append(f"{where}: HF datasets cannot load it: {type(exc).__name__}: {exc}")
            continue
        report.rows[(g.subset, g.split)] = n
        report.columns[(g.subset, g.split)] = cols
        if n != g.images:
            problems.append(f"{where}: HF datasets gave {n} rows, {g.images} were staged")
        missing = expected_cols - set(cols)
        if missing:
            problems.append(f"{where}: columns missing in HF datasets: {', '.join(sorted(missing))}")


def _decode_row(row: dict[str, Any]) -> dict[str, Any]:
    from PIL import Image

    out = {}
    for k, v in row.items():
        if isinstance(v, dict) and set(v) == {"bytes", "path"} and v.get("bytes"):
            with Image.open(io.BytesIO(v["bytes"])) as im:
                im.load()
                out[k] = im.copy()
        else:
            out[k] = v
    return out


def _check_row(row: dict[str, Any], g: GroupStats, where: str, problems: list[str]) -> None:
    meta = row.get("json")
    if g.meta_keys and not isinstance(meta, dict):
        problems.append(f"{where}: the json column did not load as a record")
    elif isinstance(meta, dict):
        missing = set(g.meta_keys) - set(meta)
        if missing:
            problems.append(f"{where}: metadata fields missing in HF datasets: {', '.join(sorted(missing))}")


# --------------------------------------------------------------------------------------------
# upload


@dataclass(frozen=True)
class UploadStep:
    """One ``upload_folder`` call: a commit (or a few, for large folders) of matching files."""

    message: str
    allow_patterns: tuple[str, ...]
    delete_patterns: tuple[str, ...] = ()
    files: tuple[str, ...] = ()


def upload_plan(staged: StagedDataset) -> list[UploadStep]:
    """The commits an upload makes, in order: one per split folder, then the card and indexes.

    The card goes last, so a repo whose upload was interrupted never advertises configs whose
    files are not there yet. Each split folder's commit also deletes remote files of that folder
    that this staging does not have (a republish with fewer shards leaves none behind).
    """
    steps = []
    out = staged.out
    for g in staged.groups:
        allow = tuple(f"{g.folder}/{p}" for p in _SHARD_FILE_PATTERNS)
        files = tuple(sorted(p.relative_to(out).as_posix() for p in (out / g.folder).iterdir() if p.is_file()
                             and any(p.match(pat) for pat in _SHARD_FILE_PATTERNS)))
        steps.append(UploadStep(f"Add {g.subset}/{g.split}: {g.images:,} samples in {len(g.shards)} shard(s)",
                                allow, (f"{g.folder}/*",), files))
    meta_allow = ("README.md", DECLARATION_NAME, f"{DATA_DIR}/*/index.json")
    meta_files = tuple(sorted(["README.md", DECLARATION_NAME] + [f"{DATA_DIR}/{s}/index.json"
                                                                 for s in staged.subsets]))
    steps.append(UploadStep("Dataset card, declaration and shard indexes (inscene publish)", meta_allow, (),
                            meta_files))
    return steps


def _hf_api() -> Any:
    """The Hub client (the one boundary tests replace)."""
    from huggingface_hub import HfApi

    return HfApi()


def _network_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [OSError, ConnectionError, TimeoutError]
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        with contextlib.suppress(ImportError, AttributeError):
            errors.append(getattr(__import__(module), name))
    return tuple(errors)


def _redact(text: str, token: str | None) -> str:
    text = re.sub(r"hf_[A-Za-z0-9]{20,}", "hf_***", text)
    return text.replace(token, "***") if token else text


def upload(
    staged: StagedDataset,
    repo_id: str,
    *,
    private: bool = False,
    api: Any = None,
    console: Any = None,
) -> list[UploadStep]:
    """Push a staged folder to the Hub dataset repo ``repo_id``, resumably.

    Uses ``HfApi.upload_folder`` once per :func:`upload_plan` step: with ``hf_xet`` installed
    (huggingface_hub >= 1) each call is a streamed, multi-commit, resumable upload; rerunning
    after an interruption skips what is already committed, and the per-folder steps bound what any
    one call redoes. The token comes from ``HF_TOKEN`` or the user's ``hf auth login`` and is never
    printed or logged.

    Raises:
        InsceneError: offline mode, no token, a public existing repo with ``private=True``, or a
            network / Hub error (the message says how to resume).
    """
    import huggingface_hub
    import huggingface_hub.constants as hconst

    if hconst.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE"):
        raise InsceneError("HF_HUB_OFFLINE is set: uploading needs the network (unset it; --dry-run works offline)")
    token = huggingface_hub.get_token()
    if not token:
        raise InsceneError(
            "no Hugging Face token: set HF_TOKEN or run `hf auth login` (a write token for the target organisation)"
        )
    api = api if api is not None else _hf_api()
    plan = upload_plan(staged)
    try:
        api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True, token=token)
        if private:
            info = api.repo_info(repo_id, repo_type="dataset", token=token)
            if not getattr(info, "private", False):
                raise InsceneError(
                    f"{repo_id} already exists and is public; refusing to upload with --private (make it "
                    "private on the Hub first, or drop --private)"
                )
        for i, step in enumerate(plan, 1):
            if console is not None:
                console.print(f"upload {i}/{len(plan)}: {step.message}")
            api.upload_folder(
                repo_id=repo_id,
                repo_type="dataset",
                folder_path=str(staged.out),
                allow_patterns=list(step.allow_patterns),
                delete_patterns=list(step.delete_patterns) or None,
                commit_message=step.message,
                token=token,
            )
    except InsceneError:
        raise
    except _network_errors() as exc:
        raise InsceneError(
            f"upload to {repo_id} failed: {type(exc).__name__}: {_redact(str(exc), token)}; rerun the same "
            "command to resume (files already committed are skipped)"
        ) from None
    return plan


# --------------------------------------------------------------------------------------------
# publish


@dataclass
class PublishResult:
    """What :func:`publish` did."""

    staged: StagedDataset
    reused: bool
    validation: ValidationReport
    uploaded: list[UploadStep] = field(default_factory=list)
    undocumented: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.validation.ok


def publish(
    dirs: Sequence[str | os.PathLike],
    repo_id: str,
    *,
    out: str | os.PathLike | None = None,
    private: bool = False,
    dry_run: bool = False,
    declaration: str | os.PathLike | None = None,
    mapping: Sequence[str] | dict[str, str] | None = None,
    check: str = "auto",
    api: Any = None,
    console: Any = None,
) -> PublishResult:
    """Stage, gate, describe, validate and (unless ``dry_run``) upload an InScene dataset.

    Args:
        dirs: dataset folders made by build-synthetic, filter-real, develop-raw, degrade.
        repo_id: ``ORG/NAME`` of the Hub dataset repo (also used in the card's snippets).
        out: the staging folder (default ``publish-NAME`` in the working directory).
        private: create the repo private (and refuse to upload into an existing public one).
        dry_run: stop after validation; nothing touches the network.
        declaration: a declaration file on top of each folder's ``inscene.json``.
        mapping: ``SPLIT/SUBSET=CONFIG/SPLIT`` overrides of where input shards are published.
        check: validation mode (see :func:`validate_folder`).
        api: a ``huggingface_hub.HfApi`` (default: a new one).
        console: rich console for progress.

    A new staging is built in ``.OUT.tmp-PID`` beside ``out`` and replaces ``out`` only once it
    validated: a run that fails (bad input, privacy gate, validation) leaves the previous ``out`` intact.

    Raises:
        PrivacyError: the privacy gate refused (exit 2).
        InsceneError: validation failed (exit 1) or the upload failed.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    from inscene.config import InsceneConfig
    from inscene.errors import RunFailures

    if not _REPO_ID_RE.match(repo_id or ""):
        raise BadInputError(f"--repo-id must be ORG/NAME, got {repo_id!r}")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as exc:
        raise BadInputError(f"invalid --repo-id {repo_id!r}: {exc}") from None
    if check not in ("auto", "full", "stream"):
        raise BadInputError(f"--check must be auto, full or stream, got {check!r}")
    dirs = [Path(d) for d in dirs]
    out = Path(out) if out is not None else Path(f"publish-{repo_id.split('/')[1]}")
    settings = InsceneConfig().hub
    decl = load_declaration(dirs, Path(declaration) if declaration is not None else None)
    _clean_stale_siblings(out)
    build = _sibling(out, "tmp")
    staged, reused = stage(dirs, out, decl, settings=settings, mapping=mapping, console=console, build=build)
    try:
        (staged.out / "README.md").write_text(build_card(staged, repo_id), encoding="utf-8")
        report = validate_folder(staged, mode=check, full_max_bytes=settings.full_check_max_bytes,
                                 cache_dir=_sibling(out, "hf-check"))
        if not report.ok:
            raise RunFailures("the staged folder failed validation:\n  " + "\n  ".join(report.problems))
        if not reused:
            _replace_folder(build, out)  # the previous --out stays as it was until here
            staged.out = out
    finally:
        shutil.rmtree(build, ignore_errors=True)
    result = PublishResult(staged, reused, report, undocumented=undocumented_columns(staged))
    if not dry_run:
        result.uploaded = upload(staged, repo_id, private=private, api=api, console=console)
    return result


def summary_table(result: PublishResult, repo_id: str, dry_run: bool) -> Any:
    """A rich table: per split and subset, images, identities, IQA means, shards, size, HF rows."""
    from rich.table import Table

    staged = result.staged
    title = f"inscene publish {'(dry run) ' if dry_run else ''}-> {repo_id}"
    table = Table(title=title, header_style="bold")
    for col in ("split", "subset", "images", "IDs", "C-IQA", "M-IQA", "MUSIQ", "shards", "MB", "HF rows"):
        table.add_column(col, justify="left" if col in ("split", "subset") else "right")
    for g in sorted(staged.groups, key=lambda g: (g.subset == IDENTITIES, _split_rank(g.split),
                                                   _subset_rank(g.subset))):
        rows = result.validation.rows.get((g.subset, g.split))
        table.add_row(
            g.split, g.subset, f"{g.images:,}", f"{g.n_identities:,}" if g.n_identities else "–",
            *(_fmt(g.iqa_mean(label), 4 if label != "MUSIQ" else 2) for label in IQA_COLUMNS),
            str(len(g.shards)), f"{g.bytes / 1e6:.1f}", "–" if rows is None else f"{rows:,}",
        )
    return table


# --------------------------------------------------------------------------------------------
# loading


@dataclass
class _Ref:
    key: str
    identity_id: str
    meta: dict[str, Any]
    get_image: Any  # () -> image (PIL for the HF backend, RGB uint8 array for webdataset)


class ReferenceIndex:
    """Reference images by ``identity_id``, decoded on access.

    Built from the ``identities`` subset; :meth:`get` returns a list of dicts
    ``{"key", "identity_id", "image", "json"}`` (empty for an unknown identity).
    """

    def __init__(self) -> None:
        self._by_id: dict[str, list[_Ref]] = {}

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, ref: _Ref) -> None:
        if ref.identity_id:
            self._by_id.setdefault(ref.identity_id, []).append(ref)

    def get(self, identity_id: str | None) -> list[dict[str, Any]]:
        return [
            {"key": r.key, "identity_id": r.identity_id, "image": r.get_image(), "json": r.meta}
            for r in self._by_id.get(identity_id or "", [])
        ]

    @classmethod
    def from_tars(cls, tars: Sequence[Path]) -> ReferenceIndex:
        """From identity shards on disk (bytes kept in memory, decoded to RGB arrays on access)."""
        from inscene.imageio import decode_image
        from inscene.shards import IMAGE_EXTENSIONS, _scan_tar

        index = cls()
        for tar in tars:
            for key, group in _scan_tar(Path(tar)):
                meta = json.loads(group.pop("json")) if "json" in group else {}
                image_field = next((n for n in sorted(group) if n.rsplit(".", 1)[-1] in IMAGE_EXTENSIONS), None)
                if image_field is None:
                    continue
                data = group[image_field]
                index.add(_Ref(key, str(meta.get("identity_id") or ""), meta,
                               lambda data=data: decode_image(data)))
        return index

    @classmethod
    def from_hf(cls, ds: Any) -> ReferenceIndex:
        """From an HF identities dataset (Arrow rows read on access) or iterable (bytes kept)."""
        import datasets

        index = cls()
        feats = ds.features or {}
        image_field = next((n for n, f in feats.items() if isinstance(f, datasets.Image)), None)
        if image_field is None:
            return index
        if isinstance(ds, datasets.Dataset):
            metas = ds["json"] if "json" in feats else [{}] * len(ds)
            keys = ds["__key__"]
            for i, (key, meta) in enumerate(zip(keys, metas, strict=True)):
                meta = dict(meta or {})
                index.add(_Ref(key, str(meta.get("identity_id") or ""), meta,
                               lambda i=i: ds[i][image_field]))
        else:
            from PIL import Image

            def _open(data: bytes) -> Any:
                with Image.open(io.BytesIO(data)) as im:
                    im.load()
                    return im.copy()

            for row in ds.decode(False):
                meta = dict(row.get("json") or {})
                data = (row.get(image_field) or {}).get("bytes")
                if data:
                    index.add(_Ref(row["__key__"], str(meta.get("identity_id") or ""), meta,
                                   lambda data=data: _open(data)))
        return index


def _record(meta: Any) -> Any:
    """The typed record of a row: a :class:`~inscene.schema.Sample`, else the
    :class:`~inscene.schema.Identity` a reference row records (build-synthetic's ``identity`` field),
    else None (metadata that is neither)."""
    from inscene.schema import Identity, Sample

    if not isinstance(meta, dict):
        return None
    try:
        return Sample.from_meta(meta)
    except (ValidationError, KeyError, TypeError, ValueError):
        pass
    identity = meta.get("identity")
    try:
        if isinstance(identity, str) and identity:
            return Identity.model_validate_json(identity)
        if isinstance(identity, dict):
            return Identity.model_validate(identity)
    except ValidationError:
        pass
    return None


def _raw_tars(root: Path, subset: str, split: str | None) -> dict[str, list[Path]]:
    """``{split folder: tars}`` of a shard folder (``{split}/{subset}-NNNNN.tar``; all splits for None).

    For ``identities`` the reference subsets the pipelines write (``refs``) count too.
    """
    names = REFERENCE_SUBSETS if subset == IDENTITIES else (subset,)
    out: dict[str, list[Path]] = {}
    for name in names:
        for p in sorted(root.glob(f"{split or '*'}/{name}-*.tar")):
            if re.fullmatch(r".+-\d{5}\.tar", p.name):
                out.setdefault(p.parent.name, []).append(p)
    return out


def _local_tars(root: Path, subset: str, split: str) -> list[Path]:
    """Shards of ``subset``/``split`` in a published folder or a shard folder."""
    published = sorted((root / DATA_DIR / subset / split).glob("*.tar"))
    if published:
        return published
    return [p for tars in _raw_tars(root, subset, split).values() for p in tars]


def _identity_tars(root: Path, split: str) -> list[Path]:
    """Reference shards: the identities split of the same name, else every identities split."""
    same = _local_tars(root, IDENTITIES, split)
    if same:
        return same
    published = sorted((root / DATA_DIR / IDENTITIES).glob("*/*.tar"))
    return published or [p for tars in _raw_tars(root, IDENTITIES, None).values() for p in tars]


def load(
    source: str | os.PathLike,
    subset: str,
    split: str,
    *,
    backend: Literal["hf", "webdataset"] = "hf",
    streaming: bool = False,
    references: bool = True,
    revision: str | None = None,
    cache_dir: str | os.PathLike | None = None,
) -> Any:
    """Load one subset and split of InScene with decoded images, records and joined references.

    Args:
        source: a published folder (``inscene publish --dry-run --out``), a shard folder written
            by the pipelines, or a Hub repo id (``ORG/NAME``).
        subset: ``synthetic``, ``real``, ``nonref``, ``test-real`` (or ``identities``).
        split: ``train``, ``val``, ``test`` ...
        backend: ``hf``: a ``datasets.Dataset`` (or ``IterableDataset`` with ``streaming``) whose
            rows gain ``record`` (a :class:`~inscene.schema.Sample`; for identity reference rows
            that are not one, their :class:`~inscene.schema.Identity`; None when the metadata is
            neither) and ``references`` (``[{"key", "identity_id", "image", "json"}, ...]``), images as
            PIL; ``webdataset``: a ``webdataset.WebDataset`` pipeline (always streaming) yielding
            dicts with RGB uint8 arrays, decoded ``json``, ``record`` and ``references``.
        streaming: HF backend: stream instead of building an Arrow cache.
        references: join the identity references (the identities split of the same name, else
            all identities). With streaming, the references' bytes are held in memory.
        revision: Hub revision (repo ids only).
        cache_dir: HF datasets cache (default: HF's).

    Raises:
        BadInputError: no such folder/subset/split.
        InsceneError: a Hub repo that cannot be reached.
    """
    if backend not in ("hf", "webdataset"):
        raise BadInputError(f"backend must be 'hf' or 'webdataset', got {backend!r}")
    path = Path(source)
    local = path.exists()
    if not local and not _REPO_ID_RE.match(str(source)):
        raise BadInputError(f"not a folder or a Hub repo id (ORG/NAME): {source}")
    if backend == "webdataset":
        if not local:
            path = _download(str(source), subset, split, revision, references)
        return _load_webdataset(path, subset, split, references)
    return _load_hf(str(source) if not local else path, subset, split, streaming=streaming,
                    references=references, revision=revision, cache_dir=cache_dir, local=local)


def _download(repo_id: str, subset: str, split: str, revision: str | None, references: bool) -> Path:
    from huggingface_hub import snapshot_download

    patterns = [f"{DATA_DIR}/{subset}/{split}/*.tar", "README.md"]
    if references:
        patterns.append(f"{DATA_DIR}/{IDENTITIES}/*/*.tar")
    try:
        return Path(snapshot_download(repo_id, repo_type="dataset", revision=revision, allow_patterns=patterns))
    except _network_errors() as exc:
        raise InsceneError(f"cannot download {repo_id} from the Hub: {type(exc).__name__}: {_redact(str(exc), None)}") \
            from None


def _load_webdataset(root: Path, subset: str, split: str, references: bool) -> Any:
    import webdataset as wds

    tars = _local_tars(root, subset, split)
    if not tars:
        raise BadInputError(f"no shards for {subset}/{split} in {root}")
    refs = ReferenceIndex.from_tars(_identity_tars(root, split)) if references and subset != IDENTITIES else None

    def join(sample: dict[str, Any]) -> dict[str, Any]:
        meta = sample.get("json")
        sample["record"] = _record(meta)
        if refs is not None:
            sample["references"] = refs.get((meta or {}).get("identity_id"))
        return sample

    urls = [str(t) for t in tars]
    return wds.WebDataset(urls, shardshuffle=False, empty_check=False).decode("rgb8").map(join)


def _load_hf(source: Any, subset: str, split: str, *, streaming: bool, references: bool, revision: str | None,
             cache_dir: Any, local: bool) -> Any:
    import datasets

    kwargs: dict[str, Any] = {"streaming": streaming, "cache_dir": None if cache_dir is None else str(cache_dir)}
    if revision is not None and not local:
        kwargs["revision"] = revision

    def _load(name: str, sp: str | None) -> Any:
        if local and not (Path(source) / "README.md").exists():
            # a shard folder: HF's webdataset builder straight on the tars
            files = {k: [str(p) for p in v] for k, v in _raw_tars(Path(source), name, sp).items()}
            if not files:
                raise BadInputError(f"no shards for {name}/{sp or '*'} in {source}")
            if sp is None:
                return datasets.load_dataset("webdataset", data_files=files, **kwargs)
            return datasets.load_dataset("webdataset", data_files=files, split=sp, **kwargs)
        return datasets.load_dataset(str(source), name=name, split=sp, **kwargs)

    try:
        ds = _load(subset, split)
    except (ValueError, FileNotFoundError) as exc:
        raise BadInputError(f"cannot load {subset}/{split} from {source}: {exc}") from None
    except _network_errors() as exc:
        raise InsceneError(f"cannot load {source} from the Hub: {type(exc).__name__}: {_redact(str(exc), None)}") \
            from None

    refs = None
    if references and subset != IDENTITIES:
        refs = _hf_references(_load, split) or ReferenceIndex()
    if streaming:
        def join_one(row: dict[str, Any]) -> dict[str, Any]:
            row["record"] = _record(row.get("json"))
            if refs is not None:
                row["references"] = refs.get((row.get("json") or {}).get("identity_id"))
            return row

        return ds.map(join_one)

    def join_batch(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        metas = batch.get("json") or [None] * len(batch["__key__"])
        batch["record"] = [_record(m) for m in metas]
        if refs is not None:
            batch["references"] = [refs.get((m or {}).get("identity_id")) for m in metas]
        return batch

    return ds.with_transform(join_batch)


def _hf_references(load_fn: Any, split: str) -> ReferenceIndex | None:
    import datasets

    try:
        ids = load_fn(IDENTITIES, split)
    except (ValueError, FileNotFoundError, BadInputError):
        try:
            every = load_fn(IDENTITIES, None)
        except (ValueError, FileNotFoundError, BadInputError):
            return None  # no identities subset: every sample's references are []
        parts = list(every.values())
        if isinstance(parts[0], datasets.Dataset):
            ids = datasets.concatenate_datasets(parts)
        else:
            index = ReferenceIndex()
            for part in parts:
                for refs in ReferenceIndex.from_hf(part)._by_id.values():
                    for r in refs:
                        index.add(r)
            return index
    return ReferenceIndex.from_hf(ids)
