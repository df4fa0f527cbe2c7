"""Write DNG files (Adobe DNG 1.4 / 1.7) with tifffile: synthetic phone captures of known content.

Provenance: Face2Scene (arXiv 2603.16570) §4.1 "Test data" and §6.3: the real test split is phone
RAW (DNG) captures developed with rawpy. No phone file ships with any package, so the tests, the
benchmark and the demo make their own captures here, in the layout phones write:

* IFD0 is a small 8-bit RGB preview (``NewSubfileType`` 1) carrying the DNG and colour tags
  (``DNGVersion``, ``UniqueCameraModel``, ``ColorMatrix1``, ``CalibrationIlluminant1``,
  ``AsShotNeutral``, ``BaselineExposure``, ``Orientation``, Make/Model), an EXIF IFD (ISO, exposure
  time, f-number, focal length, capture time) and, only when asked, a GPS IFD;
* its SubIFD holds the raw image (``NewSubfileType`` 0): a Bayer mosaic (``PhotometricInterpretation``
  CFA with ``CFARepeatPatternDim``/``CFAPattern``) or demosaiced ``LinearRaw`` data, 16 bits per
  sample, tiled, with ``BlackLevel``/``WhiteLevel``; uncompressed, or JPEG-XL compressed tiles
  (``Compression`` 52546, DNG 1.7, as Samsung Expert RAW writes them).

:func:`scene_to_raw` turns a linear-light sRGB scene into the sensor values a camera with the
given colour matrix would record under D65, so a neutral patch of the scene is a neutral patch of
the developed image and the camera's as-shot neutral is consistent with its colour matrix.
"""

from __future__ import annotations

import dataclasses
import io
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

__all__ = [
    "CFA_PATTERNS",
    "DEFAULT_COLOR_MATRIX",
    "DngSpec",
    "as_shot_neutral",
    "rgb8_to_dng",
    "scene_to_raw",
    "srgb_to_linear",
    "write_dng",
]

#: TIFF/DNG tag codes used here.
TAG = {
    "NewSubfileType": 254,
    "Compression": 259,
    "Make": 271,
    "Model": 272,
    "Orientation": 274,
    "DateTime": 306,
    "SubIFDs": 330,
    "CFARepeatPatternDim": 33421,
    "CFAPattern": 33422,
    "ExposureTime": 33434,
    "FNumber": 33437,
    "ExifIFD": 34665,
    "GPSIFD": 34853,
    "ISOSpeedRatings": 34855,
    "DateTimeOriginal": 36867,
    "FocalLength": 37386,
    "DNGVersion": 50706,
    "DNGBackwardVersion": 50707,
    "UniqueCameraModel": 50708,
    "CFAPlaneColor": 50710,
    "CFALayout": 50711,
    "LinearizationTable": 50712,
    "BlackLevelRepeatDim": 50713,
    "BlackLevel": 50714,
    "WhiteLevel": 50717,
    "ColorMatrix1": 50721,
    "AsShotNeutral": 50728,
    "BaselineExposure": 50730,
    "CalibrationIlluminant1": 50778,
    "ForwardMatrix1": 50964,
}

CFA_PATTERNS: dict[str, tuple[int, int, int, int]] = {
    "RGGB": (0, 1, 1, 2),
    "BGGR": (2, 1, 1, 0),
    "GRBG": (1, 0, 2, 1),
    "GBRG": (1, 2, 0, 1),
}

# linear sRGB (D65) <-> CIE XYZ (IEC 61966-2-1)
SRGB_TO_XYZ = np.array(
    [[0.4124564, 0.3575761, 0.1804375], [0.2126729, 0.7151522, 0.0721750], [0.0193339, 0.1191920, 0.9503041]]
)
XYZ_D65 = SRGB_TO_XYZ @ np.ones(3)

#: XYZ -> camera matrix of a made-up phone sensor: sRGB primaries with channel crosstalk and the
#: unequal channel sensitivities real sensors have (green most sensitive), so white balance matters.
DEFAULT_COLOR_MATRIX: tuple[float, ...] = tuple(
    float(v)
    for v in (
        np.diag([0.55, 1.0, 0.72])
        @ np.array([[0.84, 0.13, 0.03], [0.10, 0.80, 0.10], [0.03, 0.16, 0.81]])
        @ np.linalg.inv(SRGB_TO_XYZ)
    ).ravel()
)


def srgb_to_linear(rgb8: np.ndarray) -> np.ndarray:
    """sRGB-encoded uint8 (or [0, 1] float) to linear light in [0, 1] (float32)."""
    x = rgb8.astype(np.float32) / 255.0 if rgb8.dtype == np.uint8 else rgb8.astype(np.float32)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def as_shot_neutral(
    color_matrix: Sequence[float] = DEFAULT_COLOR_MATRIX, illuminant: Sequence[float] = (1.0, 1.0, 1.0)
) -> tuple[float, float, float]:
    """The camera's response to white, normalised to green = 1 (the DNG ``AsShotNeutral``).

    Args:
        color_matrix: XYZ -> camera (``ColorMatrix1``, calibrated for D65).
        illuminant: per camera channel gains of the light the scene was shot under, relative to
            D65 (e.g. ``(1.4, 1.0, 0.6)`` for warm tungsten-like light).
    """
    cam = np.asarray(color_matrix, dtype=np.float64).reshape(3, 3) @ XYZ_D65 * np.asarray(illuminant, float)
    return tuple(float(v) for v in cam / cam[1])  # type: ignore[return-value]


def scene_to_raw(
    linear_rgb: np.ndarray,
    *,
    cfa_pattern: str | None = "RGGB",
    color_matrix: Sequence[float] = DEFAULT_COLOR_MATRIX,
    black_level: int = 256,
    white_level: int = 4095,
    exposure: float = 1.0,
    illuminant: Sequence[float] = (1.0, 1.0, 1.0),
    noise: float = 0.0,
    seed: int = 0,
) -> np.ndarray:
    """Sensor values a camera with ``color_matrix`` records of a linear sRGB scene.

    Args:
        linear_rgb: HxWx3 linear-light sRGB in [0, 1].
        cfa_pattern: ``RGGB``/``BGGR``/``GRBG``/``GBRG`` for a Bayer mosaic (HxW), None for
            LinearRaw (HxWx3).
        color_matrix: XYZ -> camera (the DNG ``ColorMatrix1``), row-major 9 values.
        black_level: sensor black.
        white_level: sensor saturation.
        exposure: scale applied before clipping; at 1 scene white (1, 1, 1) puts the camera's most
            sensitive channel exactly at ``white_level``.
        illuminant: per camera channel gains of the light source relative to D65 (see
            :func:`as_shot_neutral`, which gives the matching ``AsShotNeutral``).
        noise: Gaussian read noise, in sensor units (0 = none).
        seed: seed of the noise.

    Returns:
        uint16 HxW (CFA) or HxWx3 (LinearRaw) raw values.
    """
    cm = np.asarray(color_matrix, dtype=np.float64).reshape(3, 3)
    cam_from_srgb = np.diag(np.asarray(illuminant, dtype=np.float64)) @ cm @ SRGB_TO_XYZ
    white = cam_from_srgb @ np.ones(3)
    cam = linear_rgb.astype(np.float32) @ (cam_from_srgb / white.max()).T.astype(np.float32)
    cam = np.clip(cam * np.float32(exposure), 0.0, 1.0) * np.float32(white_level - black_level)
    if cfa_pattern is None:
        out = cam
    else:
        if cfa_pattern not in CFA_PATTERNS:
            raise ValueError(f"unknown CFA pattern {cfa_pattern!r}; known: {', '.join(CFA_PATTERNS)}")
        colors = CFA_PATTERNS[cfa_pattern]
        out = np.empty(cam.shape[:2], np.float32)
        for i, c in enumerate(colors):
            dy, dx = divmod(i, 2)
            out[dy::2, dx::2] = cam[dy::2, dx::2, c]
    if noise > 0:
        out = out + np.random.default_rng(seed).normal(0.0, noise, out.shape).astype(np.float32)
    return np.clip(np.rint(out) + black_level, 0, white_level).astype(np.uint16)


# tifffile refuses to write the ExifIFD and GPSIFD pointers itself: it writes these unused codes
# (each one below the real one, with no tag in between) and the writer renames them after.
_EXIF_PLACEHOLDER = 34664
_GPS_PLACEHOLDER = 34852

# ---- hand-written IFDs (EXIF and GPS: tifffile writes image IFDs only) -----------------------

_TYPES = {"B": (1, 1), "s": (2, 1), "H": (3, 2), "I": (4, 4), "2I": (5, 8), "2i": (10, 8)}


def _rational(value: float, signed: bool = False, den: int = 1_000_000) -> list[int]:
    num = int(round(value * den))
    if not signed:
        num = max(num, 0)
    g = int(np.gcd(abs(num), den)) or 1
    return [num // g, den // g]


def _ifd_bytes(entries: list[tuple[int, str, Any]], offset: int) -> bytes:
    """A little-endian IFD (entries, next-IFD 0, then out-of-line values) placed at ``offset``."""
    entries = sorted(entries, key=lambda e: e[0])
    head = struct.pack("<H", len(entries))
    data_start = offset + 2 + 12 * len(entries) + 4
    body = b""
    data = b""
    for code, kind, value in entries:
        type_id, size = _TYPES[kind]
        if kind == "s":
            raw = value.encode("ascii") + b"\0"
            count = len(raw)
        elif kind in ("2I", "2i"):
            vals = list(value)
            count = len(vals) // 2
            raw = struct.pack("<" + ("i" if kind == "2i" else "I") * len(vals), *vals)
        else:
            vals = list(value) if isinstance(value, (list, tuple)) else [value]
            count = len(vals)
            raw = struct.pack("<" + {"B": "B", "H": "H", "I": "I"}[kind] * count, *vals)
        if len(raw) <= 4:
            field_ = raw.ljust(4, b"\0")
        else:
            field_ = struct.pack("<I", data_start + len(data))
            data += raw + (b"\0" if len(raw) % 2 else b"")
        body += struct.pack("<HHI", code, type_id, count) + field_
    return head + body + struct.pack("<I", 0) + data


def _patch_long(buf: bytearray, offset: int, value: int) -> None:
    struct.pack_into("<I", buf, offset, value)


# ---- the writer --------------------------------------------------------------------------------


@dataclass
class DngSpec:
    """Everything a generated DNG says about its capture (defaults: a plausible phone, ISO 1600)."""

    cfa_pattern: str | None = "RGGB"
    black_level: int = 256
    white_level: int = 4095
    color_matrix: tuple[float, ...] = DEFAULT_COLOR_MATRIX
    neutral: tuple[float, float, float] | None = None  # None: as_shot_neutral(color_matrix, illuminant)
    illuminant: tuple[float, float, float] = (1.0, 1.0, 1.0)  # light source gains relative to D65
    calibration_illuminant: int = 21  # D65
    forward_matrix: tuple[float, ...] | None = None
    baseline_exposure: float = 0.0
    orientation: int = 1
    make: str = "InScene"
    model: str = "Synthetic Phone"
    iso: int | None = 1600
    exposure_time: float | None = 1 / 60
    f_number: float | None = 1.8
    focal_length: float | None = 5.4
    datetime: str | None = "2025:06:01 12:00:00"
    gps: tuple[float, float] | None = None
    compression: Literal["none", "jpegxl"] | int = "none"
    tile: int = 256
    jxl_effort: int = 1
    preview: bool = True
    dng_version: tuple[int, int, int, int] | None = None
    omit_tags: frozenset[int] = field(default_factory=frozenset)


def write_dng(raw: np.ndarray, spec: DngSpec | None = None, **overrides: Any) -> bytes:
    """Encode raw sensor values as a DNG file.

    Args:
        raw: uint16 HxW Bayer mosaic (``spec.cfa_pattern`` set) or HxWx3 LinearRaw data.
        spec: what the file says about the capture; keyword ``overrides`` replace its fields.

    Returns:
        The DNG file's bytes (little-endian TIFF).

    Raises:
        ValueError: a raw array that does not match the layout, or JPEG-XL asked for without an
            imagecodecs build that has it.
    """
    import tifffile

    spec = dataclasses.replace(spec or DngSpec(), **overrides)
    raw = np.ascontiguousarray(raw, dtype=np.uint16)
    cfa = spec.cfa_pattern is not None
    if cfa and raw.ndim != 2:
        raise ValueError(f"a CFA DNG takes an HxW mosaic, got shape {raw.shape}")
    if not cfa and (raw.ndim != 3 or raw.shape[2] != 3):
        raise ValueError(f"a LinearRaw DNG takes HxWx3 data, got shape {raw.shape}")

    comp: dict[str, Any] = {}
    if spec.compression == "jpegxl":
        import imagecodecs

        if not imagecodecs.JPEGXL.available:
            raise ValueError("this imagecodecs build has no JPEG XL encoder")
        comp = {"compression": 52546, "compressionargs": {"lossless": True, "effort": spec.jxl_effort}}
    elif isinstance(spec.compression, int) and spec.compression != 1:
        comp = {"compression": spec.compression}
    version = spec.dng_version or ((1, 7, 0, 0) if spec.compression == "jpegxl" else (1, 4, 0, 0))
    backward = (1, 7, 0, 0) if spec.compression == "jpegxl" else (1, 1, 0, 0)
    neutral = spec.neutral or as_shot_neutral(spec.color_matrix, spec.illuminant)

    main: list[tuple] = [
        (TAG["DNGVersion"], "B", 4, version, True),
        (TAG["DNGBackwardVersion"], "B", 4, backward, True),
        (TAG["UniqueCameraModel"], "s", 0, f"{spec.make} {spec.model}", True),
        (TAG["Make"], "s", 0, spec.make, True),
        (TAG["Model"], "s", 0, spec.model, True),
        (TAG["Orientation"], "H", 1, spec.orientation, True),
        (TAG["ColorMatrix1"], "2i", 9, _flat_rationals(spec.color_matrix, signed=True), True),
        (TAG["CalibrationIlluminant1"], "H", 1, spec.calibration_illuminant, True),
        (TAG["AsShotNeutral"], "2I", 3, _flat_rationals(neutral), True),
        (TAG["BaselineExposure"], "2i", 1, _rational(spec.baseline_exposure, signed=True), True),
        (_EXIF_PLACEHOLDER, "I", 1, 0, True),  # becomes ExifIFD below
    ]
    if spec.datetime:
        main.append((TAG["DateTime"], "s", 0, spec.datetime, True))
    if spec.forward_matrix is not None:
        main.append((TAG["ForwardMatrix1"], "2i", 9, _flat_rationals(spec.forward_matrix, signed=True), True))
    if spec.gps is not None:
        main.append((_GPS_PLACEHOLDER, "I", 1, 0, True))
    raw_tags: list[tuple] = [
        (TAG["BlackLevel"], "H", 1, spec.black_level, True),
        (TAG["WhiteLevel"], "H", 1, spec.white_level, True),
    ]
    if cfa:
        raw_tags += [
            (TAG["CFARepeatPatternDim"], "H", 2, (2, 2), True),
            (TAG["CFAPattern"], "B", 4, CFA_PATTERNS[spec.cfa_pattern], True),
            (TAG["CFAPlaneColor"], "B", 3, (0, 1, 2), True),
            (TAG["CFALayout"], "H", 1, 1, True),
        ]
    main = [t for t in main if t[0] not in spec.omit_tags]
    raw_tags = [t for t in raw_tags if t[0] not in spec.omit_tags]

    buf = io.BytesIO()
    raw_kw: dict[str, Any] = {
        "photometric": 32803 if cfa else 34892,
        "subfiletype": 0,
        # LibRaw 0.22 misreads a tiled raw whose single tile column is wider than the image: use
        # strips (of ``tile`` rows) for images narrower than one tile
        **({"tile": (spec.tile, spec.tile)} if spec.tile <= raw.shape[1] else {"rowsperstrip": spec.tile}),
        "metadata": None,
        "software": False,
        **comp,
    }
    with tifffile.TiffWriter(buf, byteorder="<") as tw:
        if spec.preview:
            tw.write(
                _preview(raw, spec), photometric="rgb", subfiletype=1, subifds=1, metadata=None,
                software=False, extratags=main,
            )
            tw.write(raw, extratags=raw_tags, **raw_kw)
        else:
            tw.write(raw, extratags=main + raw_tags, **raw_kw)
    return _append_exif_gps(bytearray(buf.getvalue()), spec)


def _flat_rationals(values: Iterable[float], signed: bool = False) -> list[int]:
    return [v for x in values for v in _rational(float(x), signed=signed)]


def _preview(raw: np.ndarray, spec: DngSpec) -> np.ndarray:
    """A small, roughly developed RGB preview (phones put one in IFD0)."""
    step = max(1, max(raw.shape[:2]) // 256)
    step += step % 2  # keep the CFA phase
    small = raw[::step, ::step].astype(np.float32)
    if small.ndim == 2:
        small = np.repeat(small[..., None], 3, axis=2)
    small = (small - spec.black_level) / max(spec.white_level - spec.black_level, 1)
    return (np.clip(small, 0, 1) ** (1 / 2.2) * 255).astype(np.uint8)


def _append_exif_gps(buf: bytearray, spec: DngSpec) -> bytes:
    """Append the EXIF (and GPS) IFDs and point IFD0's placeholder tags at them."""
    import tifffile

    with tifffile.TiffFile(io.BytesIO(bytes(buf))) as tf:
        tags = tf.pages[0].tags
        exif = tags.get(_EXIF_PLACEHOLDER)
        gps = tags.get(_GPS_PLACEHOLDER)
        exif_at = exif.valueoffset if exif is not None else None
        gps_at = gps.valueoffset if gps is not None else None
        # the placeholder codes sort right before the real ones, so entry order stays valid
        if exif is not None:
            struct.pack_into("<H", buf, exif.offset, TAG["ExifIFD"])
        if gps is not None:
            struct.pack_into("<H", buf, gps.offset, TAG["GPSIFD"])
    if exif_at is not None:
        entries: list[tuple[int, str, Any]] = []
        if spec.exposure_time:
            entries.append((TAG["ExposureTime"], "2I", _exposure_rational(spec.exposure_time)))
        if spec.f_number:
            entries.append((TAG["FNumber"], "2I", _rational(spec.f_number, den=100)))
        if spec.iso:
            entries.append((TAG["ISOSpeedRatings"], "H", int(spec.iso)))
        if spec.datetime:
            entries.append((TAG["DateTimeOriginal"], "s", spec.datetime))
        if spec.focal_length:
            entries.append((TAG["FocalLength"], "2I", _rational(spec.focal_length, den=100)))
        entries = [e for e in entries if e[0] not in spec.omit_tags]
        buf += b"\0" * (len(buf) % 2)
        _patch_long(buf, exif_at, len(buf))
        buf += _ifd_bytes(entries, len(buf))
    if gps_at is not None and spec.gps is not None:
        lat, lon = spec.gps
        entries = [
            (0, "B", (2, 3, 0, 0)),  # GPSVersionID
            (1, "s", "N" if lat >= 0 else "S"),
            (2, "2I", _dms(abs(lat))),
            (3, "s", "E" if lon >= 0 else "W"),
            (4, "2I", _dms(abs(lon))),
        ]
        buf += b"\0" * (len(buf) % 2)
        _patch_long(buf, gps_at, len(buf))
        buf += _ifd_bytes(entries, len(buf))
    return bytes(buf)


def _exposure_rational(seconds: float) -> list[int]:
    if seconds < 1:
        return [1, int(round(1 / seconds))]
    return _rational(seconds, den=1000)


def _dms(deg: float) -> list[int]:
    d = int(deg)
    m = int((deg - d) * 60)
    s = (deg - d - m / 60) * 3600
    return [d, 1, m, 1, int(round(s * 100)), 100]


def rgb8_to_dng(
    rgb8: np.ndarray,
    spec: DngSpec | None = None,
    *,
    exposure: float = 0.9,
    noise: float = 0.0,
    seed: int = 0,
    **overrides: Any,
) -> bytes:
    """A DNG capture of an sRGB photo: linearise, map to camera space, mosaic, write.

    Orientation: ``spec.orientation`` is only a tag; the pixels are stored as given, so a reader
    that applies the tag shows them rotated/flipped accordingly.

    Args:
        rgb8: HxWx3 uint8 sRGB image (even height and width for a Bayer mosaic).
        spec: the capture's DNG fields (see :class:`DngSpec`); ``overrides`` replace fields.
        exposure: scene exposure (1 = scene white at the sensor's clip point).
        noise: read noise in sensor units.
        seed: seed of the noise.
    """
    spec = dataclasses.replace(spec or DngSpec(), **overrides)
    raw = scene_to_raw(
        srgb_to_linear(rgb8), cfa_pattern=spec.cfa_pattern, color_matrix=spec.color_matrix,
        black_level=spec.black_level, white_level=spec.white_level, exposure=exposure,
        illuminant=spec.illuminant, noise=noise, seed=seed,
    )
    return write_dng(raw, spec)
