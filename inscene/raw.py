"""RAW / DNG development: rawpy (LibRaw) for every RAW, JPEG-XL DNGs through tifffile + imagecodecs.

Provenance: Face2Scene (arXiv 2603.16570) §4.1 "Test data", §6.3: the real test split is 100 Samsung
S25 Edge RAW captures at ISO 3200/1600/800, "processed ... using the rawpy library".

One development for every file. LibRaw develops every RAW it reads (DNG, CR2, NEF, ARW, ...): black
and white levels, the DNG ``LinearizationTable``, CFA demosaic or LinearRaw, as-shot white balance,
the camera matrix to sRGB, gamma, optional auto-brightness, orientation from the file.

JPEG-XL DNGs. Newer phones (Samsung Expert RAW) write DNG 1.7 files whose raw tiles are JPEG-XL
compressed (``Compression`` 52546); LibRaw builds without Adobe's DNG SDK, rawpy's wheels among
them, refuse them ("Unsupported file format"). :func:`develop` detects them from the TIFF header,
decodes every tile with imagecodecs' JPEG-XL decoder (tiles located by tifffile) and hands LibRaw
the same file with those tiles stored uncompressed: every tag (levels, CFA, colour matrices,
neutral, orientation, EXIF) byte for byte as the camera wrote it, only ``Compression``, the tile
offsets and byte counts changed. LibRaw then applies the DNG colour pipeline those tags describe,
exactly as for an uncompressed DNG, so a JPEG-XL capture and its uncompressed twin develop to the
same pixels, and a split mixing both is developed consistently. The record names the decoder
(``decoder``: ``libraw-0.22.2`` or ``tifffile+imagecodecs-jpegxl -> libraw-0.22.2``).

Tags LibRaw does not apply to any file are not applied to JPEG-XL files either: ``ForwardMatrix``
(LibRaw converts with ``ColorMatrix``), ``ProfileToneCurve`` and other camera-profile looks, and
``BaselineExposure``, which :class:`~inscene.config.RawSettings` ``baseline_exposure`` can apply to
every DNG through LibRaw's exposure shift.

Bad files raise :class:`RawDecodeError` (a :class:`~inscene.errors.ImageDecodeError`) with a short
reason (``empty``, ``not_raw``, ``truncated``, ``corrupt``, ``unsupported_compression``,
``missing_tags``, ``too_large``, ``unsupported``) and a one-line detail; nothing is half-decoded.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import io
import logging
import os
import re
import struct
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from inscene.errors import ImageDecodeError

if TYPE_CHECKING:
    from inscene.config import RawSettings

__all__ = [
    "JPEGXL_DNG",
    "RAW_SUFFIXES",
    "CaptureInfo",
    "DevelopedRaw",
    "DngInfo",
    "RawDecodeError",
    "capture_metadata",
    "develop",
    "develop_file",
    "develop_record",
    "inspect_dng",
    "iso_group",
    "jpegxl_available",
    "jpegxl_dng_to_uncompressed",
    "libraw_version",
    "rawpy_params",
]

#: File suffixes LibRaw reads (lower case); the pipeline's capture scan looks for these.
RAW_SUFFIXES = (
    ".dng", ".cr2", ".cr3", ".crw", ".nef", ".nrw", ".arw", ".srf", ".sr2", ".raf", ".orf", ".rw2",
    ".pef", ".ptx", ".srw", ".x3f", ".3fr", ".fff", ".iiq", ".erf", ".kdc", ".dcr", ".mos", ".mrw",
    ".raw", ".rwl", ".mef", ".gpr",
)

JPEGXL_DNG = 52546
CFA = 32803
LINEAR_RAW = 34892
#: DNG compressions rawpy's LibRaw decodes itself: none, (lossless) JPEG, deflate, lossy JPEG.
LIBRAW_DNG_COMPRESSIONS = {1: "none", 7: "JPEG", 8: "deflate", 34892: "lossy JPEG"}
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*")
_DNG_TAGS = {
    "DNGVersion": 50706,
    "DNGBackwardVersion": 50707,
    "UniqueCameraModel": 50708,
    "CFARepeatPatternDim": 33421,
    "CFAPattern": 33422,
    "ColorMatrix1": 50721,
    "AsShotNeutral": 50728,
    "BaselineExposure": 50730,
    "BitsPerSample": 258,
    "Compression": 259,
}
_SIGNATURES = (
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"GIF8", "a GIF image"),
    (b"BM", "a BMP image"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a ZIP archive"),
)


class RawDecodeError(ImageDecodeError):
    """A RAW file that cannot be developed.

    Attributes:
        reason: ``empty``, ``not_raw``, ``truncated``, ``corrupt``, ``unsupported_compression``,
            ``missing_tags``, ``too_large`` or ``unsupported``.
        source: the file.
        detail: one human line.
    """

    def __init__(self, reason: str, source: str = "<bytes>", detail: str = "") -> None:
        super().__init__(reason, source, detail)
        self.args = (f"cannot develop RAW {source}: {reason}" + (f" ({detail})" if detail else ""),)

    def __str__(self) -> str:
        return self.args[0]


def libraw_version() -> str:
    """Version of the LibRaw inside rawpy, e.g. ``0.22.2``."""
    import rawpy

    return ".".join(str(v) for v in rawpy.libraw_version)


def jpegxl_available() -> bool:
    """True when imagecodecs can decode JPEG XL (needed for JPEG-XL DNGs)."""
    try:
        import imagecodecs

        return bool(imagecodecs.JPEGXL.available)
    except Exception:  # noqa: BLE001 - a broken imagecodecs install means no JPEG XL
        return False


# ---- the DNG header ----------------------------------------------------------------------------


@dataclass(frozen=True)
class DngInfo:
    """What a DNG's header says about its raw image (read without decoding pixels).

    Attributes:
        version: ``DNGVersion``, e.g. ``(1, 7, 0, 0)``.
        photometric: ``cfa`` or ``linear_raw``.
        compression: the raw IFD's ``Compression`` code.
        width: raw image width.
        height: raw image height.
        samples: samples per pixel (1 for CFA, 3 for LinearRaw).
        bits: bits per sample.
        tiled: tiles (True) or strips.
        chunks: number of tiles or strips.
        data_end: byte just past the last tile/strip.
        baseline_exposure: ``BaselineExposure`` in stops (0 when absent).
        byteorder: ``<`` or ``>``.
        raw_ifd: where the raw image is (``ifd0`` or ``subifd``).
    """

    version: tuple[int, ...]
    photometric: str
    compression: int
    width: int
    height: int
    samples: int
    bits: int
    tiled: bool
    chunks: int
    data_end: int
    baseline_exposure: float
    byteorder: str
    raw_ifd: str

    @property
    def compression_name(self) -> str:
        """``none``, ``JPEG``, ``deflate``, ``lossy JPEG``, ``JPEG-XL`` or the TIFF name/code."""
        if self.compression == JPEGXL_DNG:
            return "JPEG-XL"
        return LIBRAW_DNG_COMPRESSIONS.get(self.compression) or _compression_name(self.compression)


def _compression_name(code: int) -> str:
    import tifffile

    try:
        return f"{tifffile.COMPRESSION(code).name} ({code})"
    except ValueError:
        return str(code)


class _QuietFilter(logging.Filter):
    """Keeps tifffile's log records to itself while this thread reads a header: damage it logs
    (an offset past the end of the file) becomes an error of ours instead."""

    local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        messages = getattr(self.local, "messages", None)
        if messages is None:
            return True
        messages.append(record.getMessage())
        return False


_QUIET = _QuietFilter()
logging.getLogger("tifffile").addFilter(_QUIET)
_BAD_OFFSET = re.compile(r"invalid (?:value )?offset(?: to first page)? (\d+)")


@contextlib.contextmanager
def _quiet_tifffile() -> Iterator[list[str]]:
    before = getattr(_QUIET.local, "messages", None)
    _QUIET.local.messages = []
    try:
        yield _QUIET.local.messages
    finally:
        _QUIET.local.messages = before


def _check_offsets(messages: list[str], size: int, source: str) -> None:
    """Raise when tifffile found a header pointer past the end of the file (or elsewhere invalid)."""
    offsets = [int(m.group(1)) for msg in messages if (m := _BAD_OFFSET.search(msg))]
    if not offsets:
        return
    past = [o for o in offsets if o >= size]
    if past:
        raise RawDecodeError(
            "truncated", source, f"the header points to byte {max(past)} past the end of the {size}-byte file"
        )
    raise RawDecodeError("corrupt", source, f"invalid header offset {offsets[0]}")


_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8, 13: 4, 16: 8, 17: 8, 18: 8}


def _check_ifd_extent(data: bytes, pointer_at: int, order: str, what: str, source: str) -> None:
    """Raise ``truncated`` when a (classic TIFF) IFD, or a value it points to, ends past the file."""
    size = len(data)
    try:
        (offset,) = struct.unpack_from(order + "I", data, pointer_at)
        if offset + 2 > size:
            raise RawDecodeError("truncated", source, f"the {what} at byte {offset} is past the end of the file")
        (count,) = struct.unpack_from(order + "H", data, offset)
        end = offset + 2 + 12 * count + 4
        if end > size:
            raise RawDecodeError("truncated", source, f"the {what} ends at byte {end}, past the {size}-byte file")
        for i in range(count):
            _, kind, n = struct.unpack_from(order + "HHI", data, offset + 2 + 12 * i)
            nbytes = _TYPE_SIZES.get(kind, 1) * n
            if nbytes > 4:
                (at,) = struct.unpack_from(order + "I", data, offset + 2 + 12 * i + 8)
                if at + nbytes > size:
                    raise RawDecodeError(
                        "truncated", source, f"a value of the {what} ends at byte {at + nbytes}, past the end ({size})"
                    )
    except struct.error as exc:
        raise RawDecodeError("truncated", source, f"the {what} is cut short") from exc


def _raw_page(tf: Any) -> tuple[Any, str] | None:
    """The raw IFD: NewSubfileType 0 with CFA/LinearRaw photometric, in IFD0 or a SubIFD."""
    candidates: list[tuple[Any, str]] = []
    for page in tf.pages:
        candidates.append((page, "ifd0" if page.index == 0 else f"ifd{page.index}"))
        for sub in page.pages or ():
            candidates.append((sub, "subifd"))
    for page, where in candidates:
        if page.subfiletype == 0 and int(page.photometric) in (CFA, LINEAR_RAW):
            return page, where
    return None


def _scalar(tag: Any, default: float) -> float:
    if tag is None:
        return default
    value = tag.value
    if isinstance(value, tuple) and len(value) == 2:  # a RATIONAL read as (num, den)
        return value[0] / value[1] if value[1] else default
    return float(value)


def inspect_dng(data: bytes, source: str = "<bytes>") -> DngInfo | None:
    """Read a DNG's header and check that its raw image can be developed.

    Args:
        data: the file's bytes.
        source: the file, for error messages.

    Returns:
        A :class:`DngInfo`, or None when the bytes are not a DNG (not TIFF, or TIFF without
        ``DNGVersion``, as CR2/NEF/ARW are).

    Raises:
        RawDecodeError: ``corrupt`` (unreadable TIFF structure), ``missing_tags`` (no raw IFD, or
            a tag the DNG specification requires for it), ``truncated`` (raw data past the end of
            the file).
    """
    if data[:4] not in _TIFF_MAGIC:
        return None
    import tifffile

    try:
        with _quiet_tifffile() as messages, tifffile.TiffFile(io.BytesIO(data)) as tf:
            ifd0 = tf.pages[0]
            if _DNG_TAGS["DNGVersion"] not in ifd0.tags:
                return None
            found = _raw_page(tf)
            if found is None:
                _check_offsets(messages, len(data), source)
                raise RawDecodeError(
                    "missing_tags", source,
                    "no raw image IFD (NewSubfileType 0 with PhotometricInterpretation CFA or LinearRaw)",
                )
            page, where = found
            info = _dng_info(tf, ifd0, page, where, len(data), source)
            _check_offsets(messages, len(data), source)
            exif = ifd0.tags.get(34665)
            if exif is not None and not tf.is_bigtiff:  # the pointer sits 8 bytes into its 12-byte entry
                _check_ifd_extent(data, exif.offset + 8, tf.byteorder, "EXIF IFD", source)
            return info
    except RawDecodeError:
        raise
    except Exception as exc:  # noqa: BLE001 - tifffile raises many kinds on a damaged header
        _check_ifd_extent(data, 4, "<" if data[:2] == b"II" else ">", "first IFD", source)  # cut short?
        raise RawDecodeError("corrupt", source, f"unreadable TIFF structure: {type(exc).__name__}: {exc}") from exc


def _dng_info(tf: Any, ifd0: Any, page: Any, where: str, size: int, source: str) -> DngInfo:
    photometric = "cfa" if int(page.photometric) == CFA else "linear_raw"
    missing = []
    for name in ("ImageWidth", "ImageLength", "BitsPerSample"):
        if name not in page.tags:
            missing.append(name)
    if not page.dataoffsets or not page.databytecounts:
        missing.append("TileOffsets/StripOffsets")
    if photometric == "cfa":
        missing += [n for n in ("CFARepeatPatternDim", "CFAPattern") if _DNG_TAGS[n] not in page.tags]
    if _DNG_TAGS["ColorMatrix1"] not in ifd0.tags and _DNG_TAGS["ColorMatrix1"] not in page.tags:
        missing.append("ColorMatrix1")
    if missing:
        raise RawDecodeError("missing_tags", source, f"DNG lacks required tag(s) {', '.join(missing)}")
    if len(page.dataoffsets) != len(page.databytecounts):
        raise RawDecodeError("corrupt", source, "tile/strip offsets and byte counts differ in number")
    ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=True)]
    data_end = max(ends)
    if data_end > size:
        raise RawDecodeError(
            "truncated", source, f"raw data runs to byte {data_end} but the file has {size} bytes"
        )
    bits = page.bitspersample
    bits = int(bits[0] if isinstance(bits, tuple) else bits)
    be_tag = ifd0.tags.get(_DNG_TAGS["BaselineExposure"]) or page.tags.get(_DNG_TAGS["BaselineExposure"])
    return DngInfo(
        version=tuple(int(v) for v in ifd0.tags[_DNG_TAGS["DNGVersion"]].value),
        photometric=photometric,
        compression=int(page.compression),
        width=int(page.imagewidth),
        height=int(page.imagelength),
        samples=int(page.samplesperpixel),
        bits=bits,
        tiled=bool(page.is_tiled),
        chunks=len(page.dataoffsets),
        data_end=data_end,
        baseline_exposure=_scalar(be_tag, 0.0),
        byteorder=tf.byteorder,
        raw_ifd=where,
    )


# ---- JPEG-XL DNG -> uncompressed DNG ---------------------------------------------------------


def jpegxl_dng_to_uncompressed(data: bytes, source: str = "<bytes>", *, threads: int | None = None) -> bytes:
    """The same DNG with its JPEG-XL raw tiles (Compression 52546) stored uncompressed.

    Every tag keeps its bytes; the decoded tiles are appended and the raw IFD's ``Compression``
    (-> 1), tile/strip offsets and byte counts are rewritten in place. LibRaw reads the result.

    Args:
        data: a DNG whose raw IFD uses JPEG-XL compression.
        source: the file, for error messages.
        threads: tiles decoded in parallel (imagecodecs releases the GIL); default: CPU count.

    Raises:
        RawDecodeError: not such a DNG, no JPEG XL decoder, or a tile that does not decode to the
            raw IFD's tile shape.
    """
    import imagecodecs
    import tifffile

    if not jpegxl_available():
        raise RawDecodeError(
            "unsupported_compression", source,
            "JPEG-XL DNG, but this imagecodecs build has no JPEG XL decoder (pip install -U imagecodecs)",
        )
    with _quiet_tifffile(), tifffile.TiffFile(io.BytesIO(data)) as tf:
        found = _raw_page(tf)
        if found is None or int(found[0].compression) != JPEGXL_DNG:
            raise RawDecodeError("unsupported", source, "not a JPEG-XL compressed DNG")
        page = found[0]
        order = tf.byteorder
        tags = page.tags
        if page.planarconfig != 1 and page.samplesperpixel > 1:
            raise RawDecodeError("unsupported", source, "JPEG-XL DNG with planar (separate) samples")
        spp = int(page.samplesperpixel)
        width, height = int(page.imagewidth), int(page.imagelength)
        if page.is_tiled:
            ch, cw = int(page.tilelength), int(page.tilewidth)
            shapes = [(ch, cw)] * len(page.dataoffsets)
        else:
            rps = min(int(page.rowsperstrip or height), height)
            shapes = [(min(rps, height - i * rps), width) for i in range(len(page.dataoffsets))]
        chunks = list(zip(page.dataoffsets, page.databytecounts, strict=True))
        patch = {
            code: (tags[code].valueoffset, int(tags[code].dtype), tags[code].count)
            for code in (259, 258, 324, 325, 273, 279)
            if code in tags
        }

    def decode(i: int) -> bytes:
        offset, count = chunks[i]
        try:
            tile = imagecodecs.jpegxl_decode(data[offset : offset + count])
        except Exception as exc:  # noqa: BLE001 - a damaged tile
            raise RawDecodeError("corrupt", source, f"JPEG-XL tile {i} does not decode: {exc}") from exc
        tile = tile.reshape(tile.shape[0], tile.shape[1], -1)
        h, w = shapes[i]
        if tile.shape[2] != spp or tile.shape[0] > h or tile.shape[1] > w or tile.dtype.kind != "u":
            raise RawDecodeError(
                "unsupported", source,
                f"JPEG-XL tile {i} decodes to {tile.shape} {tile.dtype}, expected ({h}, {w}, {spp}) integers",
            )
        full = np.zeros((h, w, spp), dtype=np.uint16)
        full[: tile.shape[0], : tile.shape[1]] = tile
        return full.astype(order + "u2", copy=False).tobytes()

    workers = max(1, min(threads or os.cpu_count() or 1, len(chunks)))
    with ThreadPoolExecutor(workers) as pool:
        decoded = list(pool.map(decode, range(len(chunks))))

    out = bytearray(data)
    out += b"\0" * (len(out) % 2)
    new_offsets, new_counts = [], []
    for blob in decoded:
        new_offsets.append(len(out))
        new_counts.append(len(blob))
        out += blob
    if len(out) >= 2**32:
        raise RawDecodeError("too_large", source, "uncompressed raw data would exceed 4 GiB")

    def put(code: int, values: list[int]) -> None:
        valueoffset, dtype, count = patch[code]
        fmt = {3: "H", 4: "I", 16: "Q", 13: "I"}.get(dtype)
        if fmt is None or count != len(values) or (fmt == "H" and max(values) > 0xFFFF):
            raise RawDecodeError("unsupported", source, f"tag {code} of type {dtype} cannot be rewritten")
        struct.pack_into(order + fmt * count, out, valueoffset, *values)

    put(259, [1])
    put(258, [16] * patch[258][2])  # decoded samples are written as 16-bit words
    if 324 in patch:
        put(324, new_offsets)
        put(325, new_counts)
    else:
        put(273, new_offsets)
        put(279, new_counts)
    return bytes(out)


# ---- development ---------------------------------------------------------------------------------


def rawpy_params(settings: RawSettings, dng: DngInfo | None = None) -> dict[str, Any]:
    """Keyword arguments of ``rawpy.RawPy.postprocess`` for ``settings`` (and the file's DNG header)."""
    import rawpy

    params: dict[str, Any] = {
        "use_camera_wb": settings.use_camera_wb,
        "output_bps": settings.output_bps,
        "demosaic_algorithm": rawpy.DemosaicAlgorithm[settings.demosaic],
        "gamma": tuple(settings.gamma),
        "no_auto_bright": not settings.auto_bright,
        "auto_bright_thr": settings.auto_bright_thr,
        "highlight_mode": {
            "clip": rawpy.HighlightMode.Clip,
            "ignore": rawpy.HighlightMode.Ignore,
            "blend": rawpy.HighlightMode.Blend,
            "reconstruct": rawpy.HighlightMode.ReconstructDefault,
        }[settings.highlight_mode],
        "output_color": rawpy.ColorSpace.sRGB,
        "user_flip": None,  # orientation from the file
    }
    if settings.baseline_exposure and dng is not None and dng.baseline_exposure:
        # LibRaw's exposure shift is linear, 0.25 (-2 EV) to 8 (+3 EV)
        params["exp_shift"] = float(np.clip(2.0 ** dng.baseline_exposure, 0.25, 8.0))
    return params


def develop_record(settings: RawSettings, params: dict[str, Any]) -> dict[str, Any]:
    """The development parameters one sample records (JSON-able)."""
    return {
        "develop_library": f"rawpy-{_rawpy_version()}/libraw-{libraw_version()}",
        "use_camera_wb": settings.use_camera_wb,
        "output_bps": settings.output_bps,
        "demosaic": settings.demosaic,
        "gamma": [float(g) for g in settings.gamma],
        "auto_bright": settings.auto_bright,
        "auto_bright_thr": settings.auto_bright_thr,
        "highlight_mode": settings.highlight_mode,
        "output_color": "sRGB",
        "orientation": "from file",
        "exp_shift": float(params.get("exp_shift", 1.0)),
    }


def _rawpy_version() -> str:
    import rawpy

    return rawpy.__version__


@dataclass
class CaptureInfo:
    """Capture metadata of one RAW (never location: GPS tags are not read).

    Unknown values are ``""`` for strings and ``-1`` for numbers, so every sample has the same
    column types.
    """

    make: str = ""
    model: str = ""
    iso: int = -1
    exposure_time: float = -1.0
    f_number: float = -1.0
    focal_length: float = -1.0
    timestamp: str = ""

    def as_meta(self) -> dict[str, Any]:
        """Flat metadata columns (``capture_*``)."""
        return {f"capture_{k}": v for k, v in dataclasses.asdict(self).items()}


_EXIF_FIELDS = {
    "make": ("Image Make",),
    "model": ("Image Model", "Image UniqueCameraModel"),
    "iso": ("EXIF ISOSpeedRatings", "EXIF PhotographicSensitivity", "Image ISOSpeedRatings"),
    "exposure_time": ("EXIF ExposureTime", "Image ExposureTime"),
    "f_number": ("EXIF FNumber", "Image FNumber"),
    "focal_length": ("EXIF FocalLength", "Image FocalLength"),
    "timestamp": ("EXIF DateTimeOriginal", "Image DateTimeOriginal", "Image DateTime"),
}


def _exif_value(tag: Any) -> Any:
    values = getattr(tag, "values", None)
    if isinstance(values, (list, tuple)) and values:
        v = values[0]
        if hasattr(v, "num") and hasattr(v, "den"):
            return v.num / v.den if v.den else None
        return v
    if isinstance(values, str):
        return values.strip().strip("\x00")
    return values


def _iso_timestamp(text: str) -> str:
    for fmt in ("%Y:%m:%d %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y:%m:%d %H:%M"):
        try:
            return datetime.strptime(text.strip(), fmt).isoformat()
        except ValueError:
            continue
    return ""


def capture_metadata(data: bytes, raw: Any | None = None) -> CaptureInfo:
    """Make, model, ISO, exposure time (s), f-number, focal length (mm) and capture time.

    rawpy's ``other`` fields (LibRaw's parser, rawpy >= 0.28) are used where present; the EXIF
    tags (exifread) fill the rest, give make/model (rawpy does not expose them) and, where they
    agree with LibRaw's float32 values, their exact rationals. GPS and maker notes are never read.

    Args:
        data: the RAW file's bytes.
        raw: an open ``rawpy.RawPy`` of the same file, or None.
    """
    info = CaptureInfo()
    other = getattr(raw, "other", None) if raw is not None else None
    if other is not None:
        if other.iso_speed and other.iso_speed > 0:
            info.iso = int(round(other.iso_speed))
        if other.shutter_speed and other.shutter_speed > 0:
            info.exposure_time = float(f"{other.shutter_speed:.6g}")  # LibRaw keeps a float32
        if other.aperture and other.aperture > 0:
            info.f_number = round(float(other.aperture), 3)
        if other.focal_length and other.focal_length > 0:
            info.focal_length = round(float(other.focal_length), 3)
    exif: dict[str, Any] = {}
    try:
        import logging

        import exifread

        logging.getLogger("exifread").setLevel(logging.ERROR)
        exif = exifread.process_file(io.BytesIO(data), details=False, extract_thumbnail=False)
    except Exception:  # noqa: BLE001 - metadata is best effort; LibRaw's values stand
        exif = {}

    def first(name: str) -> Any:
        for key in _EXIF_FIELDS[name]:
            if key in exif:
                value = _exif_value(exif[key])
                if value not in (None, "", 0):
                    return value
        return None

    info.make = str(first("make") or "")
    info.model = str(first("model") or "")
    if info.iso < 0 and (v := first("iso")) is not None:
        info.iso = int(v)
    # LibRaw keeps float32s: where the EXIF rational says the same, keep its exact value (1/60 s)
    for name, digits in (("exposure_time", 9), ("f_number", 3), ("focal_length", 3)):
        v = first(name)
        if v is None:
            continue
        ours = getattr(info, name)
        if ours < 0 or abs(float(v) - ours) <= 1e-3 * abs(ours):
            setattr(info, name, round(float(v), digits))
    if (v := first("timestamp")) is not None:
        info.timestamp = _iso_timestamp(str(v))
    if not info.timestamp and other is not None and isinstance(getattr(other, "timestamp", None), datetime):
        info.timestamp = other.timestamp.replace(microsecond=0).isoformat()
    return info


def iso_group(iso: int, groups: tuple[int, ...] | list[int]) -> str:
    """The ISO group of a capture: ``iso<G>`` for the group nearest ``iso`` in stops (§6.3).

    Args:
        iso: the capture's ISO (<= 0: unknown).
        groups: the ISO values the captures were made at (``RawSettings.iso_groups``).

    Returns:
        e.g. ``iso1600``; ``iso-unknown`` when the ISO is unknown or there are no groups.
    """
    if iso <= 0 or not groups:
        return "iso-unknown"
    nearest = min(groups, key=lambda g: (abs(np.log2(iso / g)), -g))
    return f"iso{nearest}"


@dataclass
class DevelopedRaw:
    """One developed RAW.

    Attributes:
        rgb: HxWx3 uint8 or uint16 sRGB, upright.
        decoder: what decoded the raw data (``libraw-X`` or ``tifffile+imagecodecs-jpegxl -> libraw-X``).
        capture: capture metadata.
        develop: development parameters (JSON-able).
        raw_format: ``dng`` or the file suffix LibRaw read (``nef``, ...).
        compression: raw data compression (DNG: ``none``/``JPEG``/``JPEG-XL``/...; others ``""``).
        flip: LibRaw's orientation code applied (0 none, 3 180°, 5 90° CCW, 6 90° CW).
        sha256: sha256 of the original file bytes.
        file_bytes: size of the original file.
        dng: the DNG header, when the file is a DNG.
    """

    rgb: np.ndarray
    decoder: str
    capture: CaptureInfo
    develop: dict[str, Any]
    raw_format: str
    compression: str
    flip: int
    sha256: str = ""
    file_bytes: int = 0
    dng: DngInfo | None = field(default=None, repr=False)


def _sniff(data: bytes) -> str | None:
    for magic, what in _SIGNATURES:
        if data.startswith(magic):
            return what
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"mif1", b"avif"):
        return "a HEIF/AVIF image"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "a WebP image"
    return None


def _libraw_message(exc: Exception) -> str:
    msg = exc.args[0] if exc.args else ""
    msg = msg.decode(errors="replace") if isinstance(msg, bytes) else str(msg)
    return f"{type(exc).__name__}: {msg}" if msg else type(exc).__name__


def develop(
    data: bytes,
    settings: RawSettings | None = None,
    *,
    source: str = "<bytes>",
    max_pixels: int | None = None,
) -> DevelopedRaw:
    """Develop one RAW file's bytes to sRGB.

    Args:
        data: the RAW file (DNG incl. JPEG-XL DNG 1.7, or any RAW LibRaw reads).
        settings: development settings (default: :class:`~inscene.config.RawSettings`).
        source: the file name, for records and errors (its suffix names non-DNG formats).
        max_pixels: largest raw image accepted (default: ``ImageIOSettings.max_pixels``).

    Returns:
        A :class:`DevelopedRaw`.

    Raises:
        RawDecodeError: the file cannot be developed (see the module docstring for reasons).
    """
    import rawpy

    from inscene.config import ImageIOSettings, RawSettings

    settings = settings or RawSettings()
    max_pixels = max_pixels or ImageIOSettings().max_pixels
    if not data:
        raise RawDecodeError("empty", source, "0 bytes")
    what = _sniff(data)
    if what is not None:
        raise RawDecodeError("not_raw", source, f"the file is {what}, not a RAW capture")
    dng = inspect_dng(data, source)
    decoder = f"libraw-{libraw_version()}"
    buffer = data
    if dng is not None:
        if dng.width * dng.height > max_pixels:
            raise RawDecodeError("too_large", source, f"{dng.width}x{dng.height} > {max_pixels} pixels")
        if dng.compression == JPEGXL_DNG:
            buffer = jpegxl_dng_to_uncompressed(data, source)
            decoder = f"tifffile+imagecodecs-jpegxl -> {decoder}"
        elif dng.compression not in LIBRAW_DNG_COMPRESSIONS:
            raise RawDecodeError(
                "unsupported_compression", source,
                f"DNG compression {dng.compression_name}; readable: none, lossless/lossy JPEG, deflate, JPEG-XL",
            )
    try:
        raw = rawpy.RawPy()
        raw.open_buffer(io.BytesIO(buffer))
    except rawpy.LibRawFileUnsupportedError as exc:
        why = (
            "LibRaw does not recognise it as a RAW file" if dng is None
            else f"LibRaw refuses this DNG ({_libraw_message(exc)})"
        )
        raise RawDecodeError("unsupported" if dng is not None else "not_raw", source, why) from exc
    except rawpy.LibRawError as exc:  # I/O or data errors while parsing: a damaged or cut-off file
        raise RawDecodeError("corrupt", source, f"LibRaw cannot parse it: {_libraw_message(exc)}") from exc
    with raw:
        sizes = raw.sizes
        if sizes.raw_width * sizes.raw_height > max_pixels:
            raise RawDecodeError("too_large", source, f"{sizes.raw_width}x{sizes.raw_height} > {max_pixels} pixels")
        params = rawpy_params(settings, dng)
        try:
            rgb = raw.postprocess(**params)
        except (rawpy.LibRawIOError, rawpy.LibRawDataError) as exc:
            raise RawDecodeError("truncated", source, f"LibRaw: {_libraw_message(exc)}") from exc
        except rawpy.LibRawError as exc:
            raise RawDecodeError("corrupt", source, f"LibRaw: {_libraw_message(exc)}") from exc
        capture = capture_metadata(data, raw)
        flip = int(raw.sizes.flip)
    suffix = Path(source).suffix.lower().lstrip(".")
    return DevelopedRaw(
        rgb=np.ascontiguousarray(rgb),
        decoder=decoder,
        capture=capture,
        develop=develop_record(settings, params),
        raw_format="dng" if dng is not None else (suffix or "raw"),
        compression=dng.compression_name if dng is not None else "",
        flip=flip,
        dng=dng,
    )


def develop_file(
    path: str | os.PathLike[str], settings: RawSettings | None = None, *, max_pixels: int | None = None
) -> DevelopedRaw:
    """Read, hash and develop one RAW file (what ``inscene develop-raw`` does per capture).

    Raises:
        RawDecodeError: unreadable or undevelopable file.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RawDecodeError("unreadable", str(path), str(exc)) from exc
    out = develop(data, settings, source=str(path), max_pixels=max_pixels)
    out.sha256 = hashlib.sha256(data).hexdigest()
    out.file_bytes = len(data)
    return out
