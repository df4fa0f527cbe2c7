"""Tests for inscene.imageio: the bad-input battery, orientation, modes, encode, metadata."""

from __future__ import annotations

import io
import struct
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import cv2
import fsspec
import numpy as np
import pytest
from PIL import Image, ImageCms, ImageFile
from skimage import data as skdata

from inscene.errors import BadInputError, ImageDecodeError
from inscene.imageio import (
    DEFAULT_MAX_PIXELS,
    decode_image,
    encode_image,
    private_metadata,
    probe_image,
    read_source,
    scrub_metadata,
    sha256_bytes,
)


@pytest.fixture(scope="module")
def astro() -> np.ndarray:
    """A real photo, downscaled to keep the file fast: 256x256x3 uint8."""
    return cv2.resize(skdata.astronaut(), (256, 256), interpolation=cv2.INTER_AREA)


def _save(im: Image.Image, fmt: str, **opts) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **opts)
    return buf.getvalue()


def _reason(src, **kw) -> str:
    with pytest.raises(ImageDecodeError) as info:
        decode_image(src, **kw)
    return info.value.reason


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _bomb_png(width: int = 40000, height: int = 40000) -> bytes:
    """A 100-byte PNG whose IHDR claims width x height RGB (1.6 G pixels by default)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def _mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).mean())


# ---- the bad-input battery ----


def test_zero_byte_file_is_empty(tmp_path):
    p = tmp_path / "zero.jpg"
    p.write_bytes(b"")
    assert _reason(p) == "empty"
    assert _reason(b"") == "empty"


def test_text_file_named_jpg_is_not_an_image(tmp_path):
    p = tmp_path / "notes.jpg"
    p.write_text("this is not a photo\n" * 20)
    assert _reason(p) == "not_an_image"
    with pytest.raises(ImageDecodeError) as info:
        probe_image(p)
    assert info.value.reason == "not_an_image"
    assert info.value.exit_code == 2


def test_missing_file_is_unreadable(tmp_path):
    assert _reason(tmp_path / "nope.png") == "unreadable"
    assert _reason("memory://inscene-test/nope.png") == "unreadable"


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_truncated_jpeg_is_rejected_not_partially_decoded(tmp_path, astro, keep):
    full = _save(Image.fromarray(astro), "JPEG", quality=90)
    p = tmp_path / "cut.jpg"
    p.write_bytes(full[: int(len(full) * keep)])
    assert _reason(p) == "truncated"
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False
    # the header survives, so a probe still works (it never decodes)
    assert (probe_image(p).width, probe_image(p).height) == (256, 256)


def test_truncated_headers_and_png(astro):
    jpeg = _save(Image.fromarray(astro), "JPEG")
    png = _save(Image.fromarray(astro), "PNG")
    assert _reason(jpeg[:40]) == "truncated"
    assert _reason(png[:30]) == "truncated"
    assert _reason(png[: len(png) // 2]) == "truncated"


def test_header_bomb_fails_fast_without_decoding(monkeypatch):
    bomb = _bomb_png()
    loads = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: loads.append(1))
    t0 = time.perf_counter()
    assert _reason(bomb) == "too_large"
    with pytest.raises(ImageDecodeError) as info:
        probe_image(bomb)
    assert info.value.reason == "too_large"
    assert "40000x40000" in str(info.value)
    assert time.perf_counter() - t0 < 1.0
    assert loads == []  # no pixel decode was even attempted


def test_pixel_limit_is_per_call_and_leaves_pillow_global_alone(monkeypatch, astro):
    png = encode_image(astro[:50, :60])
    before = Image.MAX_IMAGE_PIXELS
    assert _reason(png, max_pixels=50 * 60 - 1) == "too_large"
    assert decode_image(png, max_pixels=50 * 60).shape == (50, 60, 3)
    assert Image.MAX_IMAGE_PIXELS == before
    # Pillow's own global limit does not decide for us: our limit is the one that applies
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert decode_image(png).shape == (50, 60, 3)
    # and a header within Pillow's global limit but above ours is still refused
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    assert _reason(_bomb_png(), max_pixels=DEFAULT_MAX_PIXELS) == "too_large"


def test_limits_hold_under_threads(astro):
    png = encode_image(astro[:40, :40])

    def work(i: int) -> str:
        limit = 100 if i % 2 else 10_000
        try:
            return str(decode_image(png, max_pixels=limit).shape)
        except ImageDecodeError as e:
            return e.reason

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(work, range(64)))
    assert got == ["too_large" if i % 2 else "(40, 40, 3)" for i in range(64)]


def test_cmyk_jpeg_decodes_to_the_right_colours(astro):
    # Pillow writes CMYK JPEG with an Adobe APP14 marker and inverted channels
    cmyk = _save(Image.fromarray(astro).convert("CMYK"), "JPEG", quality=95)
    assert Image.open(io.BytesIO(cmyk)).mode == "CMYK"
    out = decode_image(cmyk)
    assert out.shape == astro.shape and out.dtype == np.uint8
    assert _mae(out, astro) < 4  # inverted or swapped channels would be ~100


def test_16bit_gray_png_keeps_precision_and_rounds_to_8bit(tmp_path):
    values = np.array([0, 128, 129, 300, 385, 386, 1000, 32767, 65279, 65535], np.uint16)
    gray = np.tile(values, (3, 1))
    p = tmp_path / "g16.png"
    Image.fromarray(gray).save(p)  # Pillow writes I;16 as a 16-bit grayscale PNG
    assert Image.open(p).mode.startswith("I")
    out16 = decode_image(p, bit_depth=16)
    assert out16.dtype == np.uint16 and out16.shape == (3, 10, 3)
    np.testing.assert_array_equal(out16[..., 0], gray)
    np.testing.assert_array_equal(out16[..., 2], gray)
    assert len(np.unique(out16[0, :, 0])) == len(values)  # 128/129, 385/386 stay distinct
    out8 = decode_image(p)
    assert out8.dtype == np.uint8
    np.testing.assert_array_equal(out8[..., 1], np.round(gray / 257.0).astype(np.uint8))
    assert out8[0, 2, 0] == 1 and out8[0, 5, 0] == 2  # rounded, not truncated (v >> 8)


def test_16bit_rgb_png_keeps_channels_and_precision():
    rgb = np.zeros((4, 5, 3), np.uint16)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 1000, 40000, 65535
    rgb[0, 0] = (129, 128, 386)
    ok, enc = cv2.imencode(".png", rgb[..., ::-1])  # OpenCV stores BGR
    assert ok
    out16 = decode_image(enc.tobytes(), bit_depth=16)
    np.testing.assert_array_equal(out16, rgb)
    out8 = decode_image(enc.tobytes())
    np.testing.assert_array_equal(out8, np.round(rgb / 257.0).astype(np.uint8))


def test_16bit_rgba_png_composites_on_white():
    rgba = np.zeros((2, 3, 4), np.uint16)
    rgba[..., 0] = 20000
    rgba[0, :, 3] = 65535  # opaque row
    rgba[1, 0, 3], rgba[1, 1, 3], rgba[1, 2, 3] = 0, 32768, 65535
    ok, enc = cv2.imencode(".png", rgba[..., [2, 1, 0, 3]])
    out = decode_image(enc.tobytes(), bit_depth=16)
    assert out.shape == (2, 3, 3)
    np.testing.assert_array_equal(out[0], [[20000, 0, 0]] * 3)
    np.testing.assert_array_equal(out[1, 0], [65535] * 3)  # fully transparent -> white
    expect_r = round((20000 * 32768 + 65535 * (65535 - 32768)) / 65535)
    assert abs(int(out[1, 1, 0]) - expect_r) <= 1
    assert abs(int(out[1, 1, 1]) - round(65535 * (65535 - 32768) / 65535)) <= 1


def test_16bit_rgb_tiff_keeps_precision(tmp_path):
    import tifffile

    rgb = (np.arange(4 * 6 * 3, dtype=np.uint16).reshape(4, 6, 3) * 901) + 7
    p = tmp_path / "x.tif"
    tifffile.imwrite(p, rgb, photometric="rgb")
    np.testing.assert_array_equal(decode_image(p, bit_depth=16), rgb)


def test_float_tiff_is_refused_not_blackened(tmp_path):
    import tifffile

    p = tmp_path / "f.tif"
    tifffile.imwrite(p, np.array([[0.25, 0.5], [0.75, 1.0]], np.float32))
    assert _reason(p) == "unsupported_mode"


def test_grayscale_and_1bit():
    gray = np.arange(0, 256, dtype=np.uint8).reshape(16, 16)
    out = decode_image(_save(Image.fromarray(gray), "PNG"))
    assert out.shape == (16, 16, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], gray)
    bw = Image.fromarray(gray > 127)
    out = decode_image(_save(bw, "PNG"))
    np.testing.assert_array_equal(out[..., 0], np.where(gray > 127, 255, 0))


def test_palette_with_transparency_index_composites_on_white():
    idx = np.array([[0, 1, 2, 1]], np.uint8)
    im = Image.fromarray(idx, mode="P")
    im.putpalette([10, 20, 30, 200, 0, 0, 0, 0, 255] + [0] * 759)
    out = decode_image(_save(im, "PNG", transparency=0))
    np.testing.assert_array_equal(out[0], [[255, 255, 255], [200, 0, 0], [0, 0, 255], [200, 0, 0]])
    out_gif = decode_image(_save(im, "GIF", transparency=0))
    np.testing.assert_array_equal(out_gif, out)
    # the same palette without transparency keeps index 0's colour
    np.testing.assert_array_equal(decode_image(_save(im, "PNG"))[0, 0], [10, 20, 30])


def test_palette_with_partial_alpha_and_rgba_la():
    im = Image.fromarray(np.array([[0, 1]], np.uint8), mode="P")
    im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    out = decode_image(_save(im, "PNG", transparency=bytes([128, 255])))
    # red at alpha 128/255 over white: R stays 255, G = B = round(255 * 127 / 255) = 127
    np.testing.assert_array_equal(out[0], [[255, 127, 127], [0, 0, 255]])
    rgba = np.array([[[255, 0, 0, 128], [0, 255, 0, 0], [0, 0, 255, 255]]], np.uint8)
    out = decode_image(_save(Image.fromarray(rgba), "PNG"))
    np.testing.assert_array_equal(out[0], [[255, 127, 127], [255, 255, 255], [0, 0, 255]])
    la = np.array([[[0, 0], [100, 255], [0, 51]]], np.uint8)
    out = decode_image(_save(Image.fromarray(la, mode="LA"), "PNG"))
    np.testing.assert_array_equal(out[0, :, 0], [255, 100, 204])
    assert out.shape == (1, 3, 3) and np.all(out[..., 0] == out[..., 2])


# ---- EXIF orientation ----

# EXIF orientation -> Pillow transpose that turns the stored pixels upright (Pillow's own table)
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_INVERSE = {
    Image.Transpose.ROTATE_270: Image.Transpose.ROTATE_90,
    Image.Transpose.ROTATE_90: Image.Transpose.ROTATE_270,
}


def _stored_for(upright: Image.Image, orientation: int) -> Image.Image:
    """What a camera stores so that applying `orientation` shows `upright`."""
    if orientation == 1:
        return upright
    op = _UPRIGHT[orientation]
    return upright.transpose(_INVERSE.get(op, op))


def _upright_pattern() -> np.ndarray:
    """48x32 (HxW), four flat 16x16-aligned quadrant colours: any wrong flip is obvious."""
    img = np.zeros((48, 32, 3), np.uint8)
    img[:16, :16] = (230, 30, 30)
    img[:16, 16:] = (30, 230, 30)
    img[16:, :16] = (30, 30, 230)
    img[16:, 16:] = (230, 230, 30)
    img[40:, 24:] = (250, 250, 250)
    return img


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_png_lossless(orientation):
    upright = _upright_pattern()
    ex = Image.Exif()
    ex[0x0112] = orientation
    stored = _stored_for(Image.fromarray(upright), orientation)
    png = _save(stored, "PNG", exif=ex.tobytes())
    np.testing.assert_array_equal(decode_image(png), upright)
    info = probe_image(png)
    assert (info.height, info.width, info.orientation) == (48, 32, orientation)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_jpeg(orientation, tmp_path):
    upright = _upright_pattern()
    ex = Image.Exif()
    ex[0x0112] = orientation
    stored = _stored_for(Image.fromarray(upright), orientation)
    p = tmp_path / f"o{orientation}.jpg"
    stored.save(p, "JPEG", quality=95, subsampling=0, exif=ex.tobytes())
    out = decode_image(p)
    assert out.shape == upright.shape
    assert _mae(out, upright) < 3
    # block colours are far apart (>= 200 levels), so a wrong flip cannot pass this
    assert np.abs(out[8, 8].astype(int) - upright[8, 8]).max() < 12
    assert np.abs(out[44, 28].astype(int) - upright[44, 28]).max() < 12
    assert probe_image(p).height == 48


def test_probe_reads_header_only(monkeypatch, astro):
    ex = Image.Exif()
    ex[0x0112] = 6
    jpeg = _save(Image.fromarray(astro[:100, :60]), "JPEG", exif=ex.tobytes())
    png = _save(Image.fromarray(astro[:100, :60]), "PNG", exif=ex.tobytes())
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("decoded"))
    for blob, fmt in ((jpeg, "JPEG"), (png, "PNG")):
        info = probe_image(blob)
        assert (info.width, info.height, info.format, info.mode) == (100, 60, fmt, "RGB")
        assert not (info.has_gps or info.has_makernote or info.has_serial)


# ---- sources ----


def test_memory_url_file_url_and_bytes(tmp_path, astro):
    png = encode_image(astro)
    fs = fsspec.filesystem("memory")
    fs.pipe("/inscene-test/a.png", png)
    try:
        data, label = read_source("memory://inscene-test/a.png")
        assert data == png and label == "memory://inscene-test/a.png"
        np.testing.assert_array_equal(decode_image("memory://inscene-test/a.png"), astro)
    finally:
        fs.rm("/inscene-test", recursive=True)
    p = tmp_path / "a.png"
    p.write_bytes(png)
    np.testing.assert_array_equal(decode_image(f"file://{p}"), astro)
    np.testing.assert_array_equal(decode_image(str(p)), astro)
    np.testing.assert_array_equal(decode_image(bytearray(png)), astro)
    assert read_source(png) == (png, "<bytes>")
    assert sha256_bytes(png) == sha256_bytes(read_source(p)[0]) and len(sha256_bytes(png)) == 64


# ---- encode ----


@pytest.mark.parametrize(("fmt", "tol"), [("png", 0), ("jpeg", 3.0), ("jpg", 3.0), ("webp", 4.0)])
def test_encode_decode_round_trip(astro, fmt, tol):
    data = encode_image(astro, fmt, quality=95)
    out = decode_image(data)
    assert out.shape == astro.shape
    if tol == 0:
        np.testing.assert_array_equal(out, astro)
    else:
        assert _mae(out, astro) < tol
    expected = {"png": "PNG", "jpeg": "JPEG", "jpg": "JPEG", "webp": "WEBP"}[fmt]
    assert probe_image(data).format == expected


def test_encode_16bit_and_gray_round_trip():
    rgb = (np.arange(6 * 7 * 3, dtype=np.uint16).reshape(6, 7, 3) * 523) + 3
    np.testing.assert_array_equal(decode_image(encode_image(rgb), bit_depth=16), rgb)
    gray = rgb[..., 1]
    out = decode_image(encode_image(gray), bit_depth=16)
    np.testing.assert_array_equal(out[..., 0], gray)
    g8 = (gray >> 8).astype(np.uint8)
    gray_jpeg = encode_image(g8, "jpeg", quality=100)
    assert Image.open(io.BytesIO(gray_jpeg)).mode == "L"
    assert np.abs(decode_image(gray_jpeg)[..., 2].astype(int) - g8).max() <= 2
    with pytest.raises(ValueError):
        encode_image(rgb, "jpeg")
    with pytest.raises(ValueError):
        encode_image(rgb.astype(np.float32))
    with pytest.raises(ValueError):
        encode_image(rgb[..., :2].astype(np.uint8))
    with pytest.raises(ValueError):
        encode_image(g8, "gif")


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_encoded_output_has_no_exif_and_icc_only_when_asked(astro, fmt):
    data = encode_image(astro, fmt)
    im = Image.open(io.BytesIO(data))
    assert "exif" not in im.info and len(im.getexif()) == 0
    assert b"Exif\x00\x00" not in data and b"eXIf" not in data
    assert "icc_profile" not in im.info
    assert private_metadata(data) == []
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    with_icc = Image.open(io.BytesIO(encode_image(astro, fmt, icc_profile=icc)))
    assert with_icc.info.get("icc_profile") == icc


def test_16bit_png_carries_icc_only_when_asked():
    rgb = np.full((4, 4, 3), 1234, np.uint16)
    assert "icc_profile" not in Image.open(io.BytesIO(encode_image(rgb))).info
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode_image(rgb, icc_profile=icc)
    assert Image.open(io.BytesIO(data)).info.get("icc_profile") == icc
    np.testing.assert_array_equal(decode_image(data, bit_depth=16), rgb)


# ---- privacy metadata ----


def _camera_exif(orientation: int = 6) -> bytes:
    ex = Image.Exif()
    ex[0x010F] = "Canon"  # Make
    ex[0x0110] = "EOS R5"  # Model
    ex[0x0112] = orientation
    gps = ex.get_ifd(0x8825)
    gps[1], gps[2], gps[3], gps[4] = "N", (52.0, 31.0, 12.0), "E", (13.0, 24.0, 36.0)
    exif_ifd = ex.get_ifd(0x8769)
    exif_ifd[0x927C] = b"Canon maker note with internal serial 0001"
    exif_ifd[0xA431] = "BODY-SN-123456"
    exif_ifd[0xA435] = "LENS-SN-42"
    exif_ifd[0x829A] = (1.0, 250.0)  # ExposureTime: harmless, kept
    return ex.tobytes()


def _jpeg_scan(data: bytes) -> bytes:
    """Everything from the first SOS marker on: the compressed pixels."""
    return data[data.index(b"\xff\xda") :]


def test_private_metadata_and_scrub_jpeg(astro):
    data = _save(Image.fromarray(astro), "JPEG", quality=90, exif=_camera_exif())
    found = private_metadata(data)
    assert {"GPSInfo", "MakerNote", "BodySerialNumber", "LensSerialNumber"} <= set(found)
    info = probe_image(data)
    assert info.has_gps and info.has_makernote and info.has_serial

    clean = scrub_metadata(data)
    assert private_metadata(clean) == []
    assert _jpeg_scan(clean) == _jpeg_scan(data)  # pixels not re-encoded
    np.testing.assert_array_equal(decode_image(clean), decode_image(data))
    ex = Image.open(io.BytesIO(clean)).getexif()
    assert (ex[0x010F], ex[0x0110], ex[0x0112]) == ("Canon", "EOS R5", 6)
    exposure = Image.open(io.BytesIO(data)).getexif().get_ifd(0x8769)[0x829A]
    assert 0x8825 not in ex and ex.get_ifd(0x8769).get(0x829A) == exposure
    assert b"BODY-SN" not in clean and b"maker note" not in clean
    assert scrub_metadata(clean) == clean  # nothing left to do


def test_scrub_jpeg_drops_xmp_and_trailing_data(astro):
    xmp = (
        b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF><rdf:Description '
        b'exif:GPSLatitude="52,31.2N" aux:SerialNumber="998877"/></rdf:RDF></x:xmpmeta>'
    )
    data = _save(Image.fromarray(astro), "JPEG", xmp=xmp) + b"\xff\xd8second frame Exif GPS"
    assert set(private_metadata(data)) == {"XMP:GPS", "XMP:SerialNumber", "TrailingData"}
    clean = scrub_metadata(data)
    assert private_metadata(clean) == []
    assert b"998877" not in clean and clean.endswith(b"\xff\xd9")
    assert _jpeg_scan(clean) == _jpeg_scan(data)[: len(_jpeg_scan(clean))]


def test_scrub_png_keeps_idat_and_harmless_tags(astro):
    data = _save(Image.fromarray(astro), "PNG", exif=_camera_exif(orientation=3))
    assert {"GPSInfo", "MakerNote", "BodySerialNumber"} <= set(private_metadata(data))
    clean = scrub_metadata(data)
    assert private_metadata(clean) == []
    idat = lambda b: b[b.index(b"IDAT") - 4 : b.index(b"IEND")]  # noqa: E731
    assert idat(clean) == idat(data)
    np.testing.assert_array_equal(decode_image(clean), astro[::-1, ::-1])  # orientation 3 kept
    assert Image.open(io.BytesIO(clean)).getexif()[0x010F] == "Canon"


def test_scrub_webp_keeps_bitstream(astro):
    data = _save(Image.fromarray(astro), "WEBP", quality=80, exif=_camera_exif(orientation=1))
    assert "GPSInfo" in private_metadata(data)
    clean = scrub_metadata(data)
    assert private_metadata(clean) == []
    vp8 = lambda b: b[b.index(b"VP8 ") :].split(b"EXIF")[0]  # noqa: E731
    assert vp8(clean) == vp8(data)
    np.testing.assert_array_equal(decode_image(clean), decode_image(data))
    im = Image.open(io.BytesIO(clean))
    assert im.getexif()[0x0110] == "EOS R5"


def test_metadata_functions_on_non_images():
    assert private_metadata(b"") == []
    assert private_metadata(b"hello, not an image") == []
    assert private_metadata(b"\xff\xd8\xff") == []
    with pytest.raises(ImageDecodeError) as info:
        scrub_metadata(b"hello, not an image")
    assert info.value.reason == "not_an_image"


def test_scrub_refuses_formats_it_cannot_rewrite(astro):
    tiff = _save(Image.fromarray(astro[:8, :8]), "TIFF", exif=_camera_exif())
    assert "GPSInfo" in private_metadata(tiff)
    with pytest.raises(BadInputError):
        scrub_metadata(tiff)


def test_garbage_after_a_valid_signature_gives_a_typed_error():
    rng = np.random.default_rng(0)
    headers = [
        b"\xff\xd8\xff\xe0",
        b"\x89PNG\r\n\x1a\n",
        b"RIFF\x00\x00\x00\x00WEBPVP8 ",
        b"GIF89a",
    ]
    for head in headers:
        for _ in range(5):
            blob = head + rng.integers(0, 256, 200, dtype=np.uint8).tobytes()
            # random bytes may also spell out a huge size in the header
            assert _reason(blob) in {"truncated", "not_an_image", "too_large"}
            assert isinstance(private_metadata(blob), list)
