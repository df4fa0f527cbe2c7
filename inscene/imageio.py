"""Safe image decode and encode: the one door every pixel of the toolkit comes through.

Decoding checks the pixel count from the header before any pixel is decoded (a per-call limit, no
global Pillow state is touched, so it is thread-safe), applies the EXIF orientation, and turns
every supported mode into HxWx3 RGB. Encoding writes no EXIF at all. ``private_metadata`` and
``scrub_metadata`` find and remove GPS, maker notes and serial numbers without touching pixels.

Choices worth knowing:

* Alpha (RGBA, LA, palette with transparency) is composited on **white**, the background most
  viewers show transparent web images on; black would make cut-outs look like dark shadows.
* Formats are limited to JPEG (and MPO), PNG, WebP, TIFF, BMP, GIF and AVIF; Pillow's other
  plugins (EPS runs Ghostscript, for one) are never tried.
* Any failure after a valid header (short file, broken stream) is reported as ``truncated``:
  ``ImageFile.LOAD_TRUNCATED_IMAGES`` is read-only to us, and a partial image is never returned.
* 16-bit RGB(A) PNG and TIFF are decoded with OpenCV, since Pillow keeps only 8 bits of them.
* ICC profiles are not applied: pixels are returned as stored (CMYK uses Pillow's conversion).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from inscene.errors import BadInputError, ImageDecodeError

DEFAULT_MAX_PIXELS = 200_000_000
"""Largest pixel count decoded by default (phone sensors top out at 200 MP)."""

_FORMATS = ("JPEG", "PNG", "WEBP", "TIFF", "GIF", "BMP", "AVIF")
_PNG_SIG = b"\x89PNG\r\n\x1a\n"
_ORIENTATION, _EXIF_IFD = 0x0112, 0x8769
_NO_LIMIT = 2**62  # metadata-only opens decode no pixels
_PRIVATE_TAGS = {
    0x8825: "GPSInfo",
    0x927C: "MakerNote",
    0xA430: "CameraOwnerName",
    0xA431: "BodySerialNumber",
    0xA435: "LensSerialNumber",
    0xC62F: "CameraSerialNumber",
}
_XMP_APP1 = (b"http://ns.adobe.com/xap/1.0/\x00", b"http://ns.adobe.com/xmp/extension/\x00")
_PNG_DROP_TEXT = (b"XML:com.adobe.xmp", b"Raw profile type exif", b"Raw profile type APP1")
_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7]")
_MAX_TEXT = 16 << 20  # bound on decompressed PNG text chunks (zlib bombs)


@dataclass(frozen=True)
class ImageInfo:
    """What an image header says, read without decoding pixels.

    Attributes:
        width: Width as displayed (after EXIF orientation).
        height: Height as displayed (after EXIF orientation).
        format: Pillow format name (``JPEG``, ``PNG``, ``MPO`` ...).
        mode: Pillow mode of the stored pixels (``RGB``, ``P``, ``I;16`` ...).
        orientation: EXIF orientation tag (1-8), 1 when absent or invalid.
        has_gps: EXIF or XMP location is present.
        has_makernote: An EXIF maker note is present.
        has_serial: A body, lens or camera serial number is present.
    """

    width: int
    height: int
    format: str
    mode: str
    orientation: int
    has_gps: bool
    has_makernote: bool
    has_serial: bool


def sha256_bytes(data: bytes) -> str:
    """Return the hex SHA-256 digest of ``data``."""
    return hashlib.sha256(data).hexdigest()


def read_source(src: str | os.PathLike | bytes) -> tuple[bytes, str]:
    """Read an image source into memory.

    Args:
        src: Raw bytes, a local path, or an fsspec URL (``file://``, ``s3://``, ``memory://`` ...).

    Returns:
        The raw bytes and a label for messages (the path or URL, ``<bytes>`` for bytes).

    Raises:
        ImageDecodeError: ``unreadable`` when the file or URL cannot be read.
    """
    if isinstance(src, (bytes, bytearray, memoryview)):
        return bytes(src), "<bytes>"
    label = os.fsdecode(os.fspath(src))
    try:
        if "://" in label:
            import fsspec

            with fsspec.open(label, "rb") as f:
                return f.read(), label
        return Path(label).read_bytes(), label
    except (OSError, ValueError, ImportError) as e:
        raise ImageDecodeError("unreadable", label, f"{type(e).__name__}: {e}") from e


def _open(data: bytes, label: str, max_pixels: int) -> Image.Image:
    """Identify the format and read the header only; enforce ``max_pixels`` before decoding.

    Pillow's ``Image.open`` checks the global ``Image.MAX_IMAGE_PIXELS``; calling the plugin
    factories directly keeps the limit per call and leaves global state alone.
    """
    if not data:
        raise ImageDecodeError("empty", label)
    Image.init()
    for fmt in _FORMATS:
        factory, accept = Image.OPEN.get(fmt, (None, None))
        if factory is None:
            continue
        ok = accept(data[:16]) if accept else True
        if not ok or isinstance(ok, str):
            continue
        try:
            im = factory(io.BytesIO(data), "")
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageDecodeError("too_large", label, str(e)) from e
        except Exception as e:  # the signature matched, so the header itself is cut or broken
            raise ImageDecodeError("truncated", label, f"{fmt} header: {e}") from e
        w, h = im.size
        if w * h > max_pixels:
            raise ImageDecodeError("too_large", label, f"{w}x{h} exceeds {max_pixels} pixels")
        return im
    raise ImageDecodeError("not_an_image", label, "no known image signature")


def _header_exif(im: Image.Image) -> Image.Exif:
    """EXIF from the header only (``PngImageFile.getexif`` would decode the whole image)."""
    ex = Image.Exif()
    try:
        if im.info.get("exif"):
            ex.load(im.info["exif"])
        elif im.format == "TIFF":
            ex = im.getexif()
    except Exception:  # malformed EXIF must not make a good image undecodable
        return Image.Exif()
    return ex


def _orientation(ex: Image.Exif) -> int:
    value = ex.get(_ORIENTATION, 1)
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def probe_image(
    src: str | os.PathLike | bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> ImageInfo:
    """Read an image's header: size as displayed, format, mode and privacy flags.

    No pixels are decoded, so a truncated file with a good header probes fine.

    Args:
        src: Bytes, path or fsspec URL.
        max_pixels: Largest accepted width x height.

    Returns:
        The header's :class:`ImageInfo`.

    Raises:
        ImageDecodeError: ``empty``, ``unreadable``, ``not_an_image``, ``truncated`` (broken
            header) or ``too_large``.
    """
    data, label = read_source(src)
    with _open(data, label, max_pixels) as im:
        orientation = _orientation(_header_exif(im))
        w, h = im.size
        fmt, mode = im.format or "", im.mode
    names = private_metadata(data)
    return ImageInfo(
        width=h if orientation >= 5 else w,
        height=w if orientation >= 5 else h,
        format=fmt,
        mode=mode,
        orientation=orientation,
        has_gps=any("GPS" in n for n in names),
        has_makernote="MakerNote" in names,
        has_serial=any("Serial" in n for n in names),
    )


def _is_wide_rgb(im: Image.Image, data: bytes) -> bool:
    """16-bit colour or gray+alpha PNG/TIFF, which Pillow would cut to 8 bits."""
    if im.format == "PNG":
        return data[12:16] == b"IHDR" and data[24] == 16 and data[25] in (2, 4, 6)
    if im.format == "TIFF" and im.mode in ("RGB", "RGBA", "RGBX", "LA"):
        bits = im.tag_v2.get(258, (8,))
        return max(bits if isinstance(bits, tuple) else (bits,)) > 8
    return False


def _decode_opencv(data: bytes, label: str) -> tuple[np.ndarray, int]:
    import cv2

    arr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ImageDecodeError("truncated", label, "OpenCV could not decode the pixel data")
    if arr.ndim == 2:
        arr = arr[..., None]
    order = {1: [0, 0, 0], 2: [0, 0, 0, 1], 3: [2, 1, 0], 4: [2, 1, 0, 3]}[arr.shape[2]]
    return arr[..., order], 65535 if arr.dtype == np.uint16 else 255


def _to_array(im: Image.Image, label: str) -> tuple[np.ndarray, int]:
    """Decoded Pillow image -> (HxWx3 or HxWx4 array, its full-scale value)."""
    mode = im.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit grayscale; 32-bit integer data is clipped to the 16-bit range.
        gray = np.clip(np.asarray(im), 0, 65535).astype(np.uint16)
        return np.repeat(gray[..., None], 3, axis=2), 65535
    if mode.startswith("F"):  # float data has no agreed white point: refuse, don't guess
        raise ImageDecodeError("unsupported_mode", label, f"mode {mode}")
    has_alpha = "A" in mode or "a" in mode or "transparency" in im.info
    has_alpha |= mode == "P" and im.palette is not None and im.palette.mode.endswith("A")
    target = "RGBA" if has_alpha and mode != "CMYK" else "RGB"
    try:
        return np.asarray(im if mode == target else im.convert(target)), 255
    except ValueError as e:
        raise ImageDecodeError("unsupported_mode", label, f"mode {mode}") from e


def _composite_on_white(rgba: np.ndarray, full: int) -> np.ndarray:
    """Alpha-composite over white with exact integer rounding, in row blocks to bound memory."""
    out = np.empty(rgba.shape[:2] + (3,), rgba.dtype)
    for y in range(0, rgba.shape[0], 256):
        blk = rgba[y : y + 256].astype(np.uint32)  # c*a + full*(full-a) <= full**2 < 2**32
        a = blk[..., 3:]
        out[y : y + 256] = (blk[..., :3] * a + full * (full - a) + full // 2) // full
    return out


def _apply_orientation(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Turn stored pixels upright as EXIF orientation 1-8 prescribes (views, no copies)."""
    if orientation in (5, 7):
        arr = arr.transpose(1, 0, 2)
    return {
        2: arr[:, ::-1],
        3: arr[::-1, ::-1],
        4: arr[::-1],
        6: np.rot90(arr, -1),
        7: arr[::-1, ::-1],
        8: np.rot90(arr, 1),
    }.get(orientation, arr)


def decode_image(
    src: str | os.PathLike | bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS, bit_depth: int = 8
) -> np.ndarray:
    """Decode an image to upright RGB.

    Args:
        src: Bytes, path or fsspec URL.
        max_pixels: Largest accepted width x height, checked from the header before decoding.
        bit_depth: 8 for uint8 output, 16 for uint16 (8-bit sources are scaled by 257; 16-bit
            sources keep full precision, and are rounded to nearest on the 8-bit path).

    Returns:
        A C-contiguous HxWx3 array in RGB order, EXIF orientation applied, alpha composited
        on white.

    Raises:
        ImageDecodeError: with reason ``empty``, ``unreadable``, ``not_an_image``, ``truncated``,
            ``too_large`` or ``unsupported_mode``.
        ValueError: ``bit_depth`` is not 8 or 16.
    """
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    data, label = read_source(src)
    with _open(data, label, max_pixels) as im:
        orientation = _orientation(_header_exif(im))
        if _is_wide_rgb(im, data):
            arr, full = _decode_opencv(data, label)
        else:
            try:
                im.load()
            except (Image.DecompressionBombError, Image.DecompressionBombWarning, MemoryError) as e:
                raise ImageDecodeError("too_large", label, str(e)) from e
            except Exception as e:  # any decoder failure after a good header: damaged pixel data
                raise ImageDecodeError("truncated", label, f"{type(e).__name__}: {e}") from e
            arr, full = _to_array(im, label)
    if arr.shape[2] == 4:
        arr = _composite_on_white(arr, full)
    arr = _apply_orientation(arr, orientation)
    if full == 255 and bit_depth == 16:
        arr = arr.astype(np.uint16) * 257
    elif full == 65535 and bit_depth == 8:
        arr = ((arr.astype(np.uint32) + 128) // 257).astype(np.uint8)  # round(v / 257)
    return np.ascontiguousarray(arr)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def encode_image(
    arr: np.ndarray, fmt: str = "png", *, quality: int = 95, icc_profile: bytes | None = None
) -> bytes:
    """Encode an RGB or gray array; the output carries no EXIF and no ICC unless given.

    PNG is lossless at ``compress_level=3`` (several times faster than 9, a few percent
    larger). JPEG keeps full chroma (4:4:4) at ``quality >= 90`` and uses 4:2:0 below.

    Args:
        arr: HxWx3 RGB or HxW gray, uint8; uint16 is accepted for PNG (written with OpenCV,
            as Pillow cannot write 16-bit RGB).
        fmt: ``png``, ``jpeg``/``jpg`` or ``webp``.
        quality: JPEG/WebP quality (1-100); ignored for PNG.
        icc_profile: ICC profile bytes to embed, if any.

    Returns:
        The encoded file.

    Raises:
        ValueError: Unknown format, or an array shape/dtype the format cannot hold.
    """
    fmt = {"jpg": "jpeg"}.get(fmt.lower(), fmt.lower())
    if fmt not in ("png", "jpeg", "webp"):
        raise ValueError(f"unsupported format {fmt!r}; use png, jpeg or webp")
    arr = np.ascontiguousarray(arr)
    if not (arr.ndim == 2 or (arr.ndim == 3 and arr.shape[2] == 3)):
        raise ValueError(f"expected HxW or HxWx3, got shape {arr.shape}")
    if arr.dtype == np.uint16 and fmt == "png":
        import cv2

        ok, enc = cv2.imencode(
            ".png", arr[..., ::-1] if arr.ndim == 3 else arr, [cv2.IMWRITE_PNG_COMPRESSION, 3]
        )
        if not ok:
            raise ValueError("OpenCV failed to encode the 16-bit PNG")
        out = enc.tobytes()
        if icc_profile:  # iCCP must come before IDAT: place it right after IHDR
            iccp = _png_chunk(b"iCCP", b"ICC Profile\x00\x00" + zlib.compress(icc_profile))
            out = out[:33] + iccp + out[33:]
        return out
    if arr.dtype != np.uint8:
        raise ValueError(f"{fmt} needs uint8 (uint16 only for png), got {arr.dtype}")
    opts: dict = {"icc_profile": icc_profile} if icc_profile else {}
    if fmt == "png":
        opts["compress_level"] = 3
    elif fmt == "jpeg":
        opts.update(quality=quality, subsampling=0 if quality >= 90 else 2)
    else:
        opts["quality"] = quality
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt.upper(), **opts)
    return buf.getvalue()


# ---- metadata: containers walked by hand so pixels are never re-encoded ----


def _jpeg_segments(data: bytes) -> tuple[list[tuple[int, int, int]], int | None]:
    """(marker, start, end) of each segment, SOS including its entropy-coded data.

    Returns the segments and the offset just past EOI (None when the file ends early).
    """
    segs, pos, n = [(0xD8, 0, 2)], 2, len(data)
    while pos < n and data[pos] == 0xFF:
        while pos < n and data[pos] == 0xFF:  # fill bytes
            pos += 1
        if pos >= n:
            break
        start, marker = pos - 1, data[pos]
        pos += 1
        if marker == 0xD9:
            segs.append((marker, start, pos))
            return segs, pos
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            segs.append((marker, start, pos))
            continue
        if pos + 2 > n:
            break
        end = pos + struct.unpack(">H", data[pos : pos + 2])[0]
        if marker == 0xDA:  # scan data runs to the next marker that is not stuffing or RSTn
            if (m := _SCAN_END.search(data, end)) is None:
                break
            end = m.start()
        if end > n:
            break
        segs.append((marker, start, end))
        pos = end
    return segs, None


def _png_chunks(data: bytes) -> tuple[list[tuple[bytes, bytes, bytes]], int | None]:
    """(type, body, raw bytes) of each chunk; offset past IEND or None when cut short."""
    chunks, pos = [], 8
    while pos + 12 <= len(data):
        (size,) = struct.unpack(">I", data[pos : pos + 4])
        kind, end = data[pos + 4 : pos + 8], pos + 12 + size
        if end > len(data):
            break
        chunks.append((kind, data[pos + 8 : end - 4], data[pos:end]))
        pos = end
        if kind == b"IEND":
            return chunks, pos
    return chunks, None


def _webp_chunks(data: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """(fourcc, body, raw bytes incl. padding) of each RIFF chunk."""
    chunks, pos = [], 12
    while pos + 8 <= len(data):
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        end = pos + 8 + size + (size & 1)
        chunks.append((data[pos : pos + 4], data[pos + 8 : pos + 8 + size], data[pos:end]))
        pos = end
    return chunks


def _png_text(kind: bytes, body: bytes) -> tuple[bytes, bytes]:
    """Keyword and (bounded) decompressed text of a tEXt/zTXt/iTXt chunk."""
    key, _, rest = body.partition(b"\x00")
    compressed = kind == b"zTXt" or (kind == b"iTXt" and rest[:1] == b"\x01")
    if kind == b"zTXt":
        rest = rest[1:]
    elif kind == b"iTXt":
        rest = rest[2:].partition(b"\x00")[2].partition(b"\x00")[2]
    if compressed:
        try:
            rest = zlib.decompressobj().decompress(rest, _MAX_TEXT)
        except zlib.error:
            rest = b""
    return key, rest


def _exif_names(blob: bytes) -> list[str]:
    try:
        ex = Image.Exif()
        ex.load(blob)
        tags = set(ex) | (set(ex.get_ifd(_EXIF_IFD)) if _EXIF_IFD in ex else set())
    except Exception:  # an EXIF block we cannot read may hold anything: flag it
        return ["UnreadableExif"]
    return [name for tag, name in _PRIVATE_TAGS.items() if tag in tags]


def _xmp_names(xmp: bytes) -> list[str]:
    found = {
        "XMP:GPS": (b"GPSLatitude", b"GPSLongitude"),
        "XMP:SerialNumber": (b"SerialNumber",),
        "XMP:OwnerName": (b"OwnerName",),
    }
    return [name for name, keys in found.items() if any(k in xmp for k in keys)]


def private_metadata(data: bytes) -> list[str]:
    """Names of privacy-relevant metadata in an encoded image.

    Looks at EXIF (``GPSInfo``, ``MakerNote``, ``BodySerialNumber``, ``LensSerialNumber``,
    ``CameraSerialNumber``, ``CameraOwnerName``; ``UnreadableExif`` for a block that cannot be
    parsed), XMP (``XMP:GPS``, ``XMP:SerialNumber``, ``XMP:OwnerName``) and bytes after the end
    of a JPEG/PNG (``TrailingData``: MPO frames, motion-photo video, vendor trailers, each of
    which can carry its own EXIF).

    Args:
        data: The encoded file.

    Returns:
        Sorted unique names; empty for clean files and for data that is not an image.
    """
    exifs, xmps, trailing, names = [], [], b"", set()
    if data[:2] == b"\xff\xd8":
        segs, end = _jpeg_segments(data)
        for marker, s, e in segs:
            body = data[s + 4 : e]
            if marker == 0xE1 and body.startswith(b"Exif\x00"):
                exifs.append(body)
            elif marker == 0xE1 and body.startswith(_XMP_APP1):
                xmps.append(body)
        trailing = data[end:] if end else b""
    elif data[:8] == _PNG_SIG:
        chunks, end = _png_chunks(data)
        for kind, body, _ in chunks:
            if kind == b"eXIf":
                exifs.append(body)
            elif kind in (b"tEXt", b"zTXt", b"iTXt"):
                key, text = _png_text(kind, body)
                if key == b"XML:com.adobe.xmp":
                    xmps.append(text)
                elif key in _PNG_DROP_TEXT:  # ImageMagick's hex dump: 3 header lines, then hex
                    try:
                        exifs.append(bytes.fromhex("".join(text.decode().split("\n")[3:])))
                    except ValueError:
                        names.add("UnreadableExif")
        trailing = data[end:] if end else b""
    elif data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        for kind, body, _ in _webp_chunks(data):
            (exifs if kind == b"EXIF" else xmps if kind == b"XMP " else []).append(body)
    else:
        try:
            with _open(data, "<bytes>", _NO_LIMIT) as im:
                xmps.append(im.info.get("xmp") or b"")
                tiff = im.format == "TIFF"
                exifs.append(im.info.get("exif") or (im.getexif().tobytes() if tiff else b""))
        except ImageDecodeError:
            return []  # not an image: nothing to report
        except Exception:  # metadata Pillow cannot parse may hold anything: flag it
            names.add("UnreadableExif")
    names |= {n for blob in exifs for n in _exif_names(blob)}
    names |= {n for blob in xmps for n in _xmp_names(blob)}
    if trailing.strip(b"\x00\r\n\t "):
        names.add("TrailingData")
    return sorted(names)


def _clean_exif(blob: bytes) -> bytes | None:
    """EXIF (with ``Exif\\0\\0`` prefix) minus private tags and the IFD1 thumbnail.

    Falls back to an EXIF holding only the orientation when the block cannot be rewritten, and
    to None (drop EXIF) when there is nothing worth keeping.
    """
    orientation = 1
    try:
        ex = Image.Exif()
        ex.load(blob)
        orientation = _orientation(ex)
        sub = ex.get_ifd(_EXIF_IFD) if _EXIF_IFD in ex else {}
        for tag in _PRIVATE_TAGS:
            ex.pop(tag, None)
            sub.pop(tag, None)
        new = ex.tobytes()
        if not _exif_names(new) and len(new) < 65000:
            return new
    except Exception:  # malformed EXIF: keep only what is needed to display the pixels
        pass
    if orientation == 1:
        return None
    ex = Image.Exif()
    ex[_ORIENTATION] = orientation
    return ex.tobytes()


def scrub_metadata(data: bytes) -> bytes:
    """Remove GPS, maker notes, serial numbers and owner names without re-encoding pixels.

    JPEG: the EXIF APP1 segment is rewritten without private tags (harmless tags such as Make,
    Model, Orientation and exposure settings stay; the EXIF thumbnail goes), XMP APP1 segments
    and the MPO index are dropped, as is everything after EOI. The scan data is copied byte for
    byte. PNG: ``eXIf`` is rewritten likewise, XMP and raw-profile text chunks are dropped;
    IDAT chunks are copied as they are. WebP: the ``EXIF`` chunk is rewritten, ``XMP `` dropped,
    and the VP8X flags updated. Files with nothing to remove are returned unchanged.

    Args:
        data: The encoded file.

    Returns:
        The scrubbed file, in the same format.

    Raises:
        ImageDecodeError: ``empty``/``not_an_image`` for non-images, ``truncated`` for a JPEG or
            PNG whose structure ends early.
        BadInputError: private metadata in a format other than JPEG, PNG or WebP (re-encode it
            with :func:`encode_image` instead).
    """
    if not private_metadata(data):
        _open(data, "<bytes>", _NO_LIMIT).close()  # raises for non-images
        return data
    out: list[bytes] = []
    if data[:2] == b"\xff\xd8":
        segs, end = _jpeg_segments(data)
        if end is None:
            raise ImageDecodeError("truncated", "<bytes>", "JPEG ends before EOI")
        for marker, s, e in segs:
            body = data[s + 4 : e]
            if marker == 0xE1 and body.startswith(b"Exif\x00"):
                if (new := _clean_exif(body)) is not None:
                    out.append(b"\xff\xe1" + struct.pack(">H", len(new) + 2) + new)
            elif not (
                (marker == 0xE1 and body.startswith(_XMP_APP1))
                or (marker == 0xE2 and body.startswith(b"MPF\x00"))
            ):
                out.append(data[s:e])
        return b"".join(out)
    if data[:8] == _PNG_SIG:
        chunks, end = _png_chunks(data)
        if end is None:
            raise ImageDecodeError("truncated", "<bytes>", "PNG ends before IEND")
        for kind, body, raw in chunks:
            if kind == b"eXIf":
                if (new := _clean_exif(body)) is not None:
                    out.append(_png_chunk(b"eXIf", new[6:]))
            elif not (
                kind in (b"tEXt", b"zTXt", b"iTXt") and body.partition(b"\x00")[0] in _PNG_DROP_TEXT
            ):
                out.append(raw)
        return _PNG_SIG + b"".join(out)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        has_exif = False
        for kind, body, raw in _webp_chunks(data):
            if kind == b"EXIF":
                if (new := _clean_exif(body)) is not None:
                    has_exif = True
                    tiff, pad = new[6:], b"\x00" * (len(new) & 1)
                    out.append(b"EXIF" + struct.pack("<I", len(tiff)) + tiff + pad)
            elif kind != b"XMP ":
                out.append(raw)
        for i, chunk in enumerate(out):
            if chunk[:4] == b"VP8X":  # flags: 0x08 EXIF, 0x04 XMP
                flags = (chunk[8] & ~0x0C) | (0x08 if has_exif else 0)
                out[i] = chunk[:8] + bytes([flags]) + chunk[9:]
        payload = b"WEBP" + b"".join(out)
        return b"RIFF" + struct.pack("<I", len(payload)) + payload
    raise BadInputError("scrub_metadata rewrites JPEG, PNG and WebP only; re-encode this image")
