"""RAW development (inscene.raw) on DNGs written here with tifffile (inscene.dng): Bayer and
LinearRaw, uncompressed and JPEG-XL (DNG 1.7), with known content."""

from __future__ import annotations

import io

import numpy as np
import pytest
import rawpy
import skimage.data
import tifffile

from inscene import imageio
from inscene.config import RawSettings
from inscene.dng import DngSpec, as_shot_neutral, rgb8_to_dng, scene_to_raw, write_dng
from inscene.raw import (
    JPEGXL_DNG,
    RawDecodeError,
    capture_metadata,
    develop,
    develop_file,
    inspect_dng,
    iso_group,
    jpegxl_available,
)

needs_jxl = pytest.mark.skipif(not jpegxl_available(), reason="imagecodecs without JPEG XL")


def _patches(levels, size=32):
    """A row of flat grey patches (linear light), one per level."""
    return np.concatenate([np.full((size, size, 3), v, np.float32) for v in levels], axis=1)


@pytest.fixture(scope="module")
def scene8():
    return skimage.data.astronaut()[64:256, 96:352]  # 192 x 256, a face in it


# ---- the files we write are real DNGs -----------------------------------------------------------


@pytest.mark.parametrize("preview", [True, False])
@pytest.mark.parametrize("cfa", ["RGGB", None])
def test_generated_uncompressed_dng_opens_in_rawpy(scene8, cfa, preview):
    data = rgb8_to_dng(scene8, cfa_pattern=cfa, preview=preview, iso=800)
    with rawpy.imread(io.BytesIO(data)) as raw:
        assert raw.raw_type == (rawpy.RawType.Flat if cfa else rawpy.RawType.Stack)
        assert raw.sizes.width == 256 and raw.sizes.height == 192
        assert raw.black_level_per_channel == [256] * 4 and raw.white_level == 4095
        if cfa:
            assert raw.raw_pattern.tolist() == [[0, 1], [3, 2]]  # R G / G B
        wb = raw.camera_whitebalance
        neutral = as_shot_neutral()
        assert wb[0] == pytest.approx(1 / neutral[0], rel=1e-3) and wb[2] == pytest.approx(1 / neutral[2], rel=1e-3)
        assert raw.other.iso_speed == 800
    info = inspect_dng(data)
    assert info.photometric == ("cfa" if cfa else "linear_raw") and info.compression == 1
    assert info.raw_ifd == ("subifd" if preview else "ifd0")


@needs_jxl
@pytest.mark.parametrize("cfa", ["RGGB", None])
def test_rawpy_alone_refuses_jpegxl_dng(scene8, cfa):
    """The fallback is necessary: rawpy's LibRaw (no DNG SDK) rejects DNG 1.7 JPEG-XL tiles."""
    data = rgb8_to_dng(scene8, cfa_pattern=cfa, compression="jpegxl")
    with tifffile.TiffFile(io.BytesIO(data)) as tf:
        raw_page = tf.pages[0].pages[0]
        assert raw_page.compression == JPEGXL_DNG
        offset = raw_page.dataoffsets[0]
        head = data[offset : offset + 12]
        assert head[:2] == b"\xff\x0a" or head == b"\x00\x00\x00\x0cJXL \r\n\x87\n"  # JPEG XL stream/container
        assert bytes(tf.pages[0].tags[50706].value) == bytes((1, 7, 0, 0))
    with pytest.raises(rawpy.LibRawFileUnsupportedError):
        with rawpy.imread(io.BytesIO(data)) as raw:
            raw.postprocess()


@needs_jxl
@pytest.mark.parametrize(
    "kw",
    [
        {"cfa_pattern": "RGGB"},
        {"cfa_pattern": None},
        {"cfa_pattern": "GRBG", "preview": False, "tile": 96},  # edge tiles, raw image in IFD0
        {"cfa_pattern": None, "orientation": 6},
    ],
    ids=["bayer", "linearraw", "bayer-ifd0-edge-tiles", "linearraw-rotated"],
)
def test_jpegxl_dng_develops_like_its_uncompressed_twin(scene8, kw):
    plain = rgb8_to_dng(scene8, noise=8, seed=3, **kw)
    jxl = rgb8_to_dng(scene8, noise=8, seed=3, compression="jpegxl", **kw)
    assert len(jxl) < len(plain)
    a, b = develop(plain), develop(jxl)
    assert a.decoder.startswith("libraw-") and b.decoder.startswith("tifffile+imagecodecs-jpegxl -> libraw-")
    assert a.compression == "none" and b.compression == "JPEG-XL"
    assert a.rgb.shape == b.rgb.shape
    assert np.abs(a.rgb.astype(int) - b.rgb.astype(int)).max() <= 1  # 8-bit LSB
    s16 = RawSettings(output_bps=16)
    assert np.array_equal(develop(plain, s16).rgb, develop(jxl, s16).rgb)


# ---- development: size, orientation, neutral grey, monotone 16-bit ------------------------------


@pytest.mark.parametrize(("orientation", "corner"), [(1, (0, 0)), (3, (1, 1)), (6, (0, 1)), (8, (1, 0))])
def test_size_and_orientation_from_the_file(orientation, corner):
    """A bright block stored top-left appears where the Orientation tag puts it, at the right size."""
    lin = np.full((96, 160, 3), 0.05, np.float32)
    lin[:24, :24] = 0.9
    raw = scene_to_raw(lin)
    out = develop(write_dng(raw, orientation=orientation)).rgb
    assert out.shape == ((96, 160, 3) if orientation in (1, 3) else (160, 96, 3))
    h, w = out.shape[:2]
    luma = out.mean(axis=2)
    quads = [[luma[: h // 2, : w // 2].mean(), luma[: h // 2, w // 2 :].mean()],
             [luma[h // 2 :, : w // 2].mean(), luma[h // 2 :, w // 2 :].mean()]]
    brightest = np.unravel_index(np.argmax(quads), (2, 2))
    assert tuple(int(v) for v in brightest) == corner


@pytest.mark.parametrize("cfa", ["RGGB", "BGGR", None])
def test_grey_patches_stay_neutral_under_as_shot_white_balance(cfa):
    """Grey under a warm light: as-shot WB makes it neutral; daylight WB leaves the cast."""
    light = (1.45, 1.0, 0.62)
    lin = _patches([0.04, 0.18, 0.45, 0.8])
    raw = scene_to_raw(lin, cfa_pattern=cfa, illuminant=light, exposure=0.95)
    data = write_dng(raw, cfa_pattern=cfa, illuminant=light)
    out = develop(data, RawSettings(auto_bright=False)).rgb.astype(float)
    cast = develop(data, RawSettings(auto_bright=False, use_camera_wb=False)).rgb.astype(float)
    for i in range(4):
        patch = out[8:24, 32 * i + 8 : 32 * i + 24].reshape(-1, 3).mean(axis=0)
        assert patch.max() - patch.min() <= 2.0, (i, patch)
        warm = cast[8:24, 32 * i + 8 : 32 * i + 24].reshape(-1, 3).mean(axis=0)
        if warm.max() < 250:
            assert warm[0] - warm[2] > 10, (i, warm)
    # brighter patches develop brighter
    means = [out[8:24, 32 * i + 8 : 32 * i + 24].mean() for i in range(4)]
    assert means == sorted(means)


@pytest.mark.parametrize("cfa", ["RGGB", None])
def test_16bit_output_is_monotone_in_the_raw_values(cfa):
    ramp = np.tile(np.linspace(0.0, 1.0, 512, dtype=np.float32), (64, 1))
    lin = np.repeat(ramp[..., None], 3, axis=2)
    raw = scene_to_raw(lin, cfa_pattern=cfa, exposure=0.98)
    out = develop(write_dng(raw, cfa_pattern=cfa), RawSettings(output_bps=16)).rgb
    assert out.dtype == np.uint16
    for c in range(3):
        profile = out[8:-8, 2:-2, c].astype(np.float64).mean(axis=0)  # demosaic borders aside
        assert np.all(np.diff(profile) >= 0), c
        assert profile[-1] - profile[0] > 50_000


def test_develop_parameters_are_applied_and_recorded(scene8):
    data = rgb8_to_dng(scene8, baseline_exposure=1.0)
    base = develop(data, RawSettings(auto_bright=False))
    shifted = develop(data, RawSettings(auto_bright=False, baseline_exposure=True))
    assert shifted.rgb.mean() > base.rgb.mean() + 10
    assert shifted.develop["exp_shift"] == 2.0 and base.develop["exp_shift"] == 1.0
    lin = develop(data, RawSettings(demosaic="LINEAR", gamma=(1.0, 1.0)))
    assert lin.develop["demosaic"] == "LINEAR" and lin.develop["gamma"] == [1.0, 1.0]
    assert lin.rgb.mean() < base.rgb.mean()  # linear output is darker than gamma-encoded
    assert base.develop["use_camera_wb"] is True and base.develop["develop_library"].startswith("rawpy-")


# ---- metadata --------------------------------------------------------------------------------------


def test_capture_metadata_without_gps(scene8, tmp_path):
    data = rgb8_to_dng(
        scene8, iso=3200, exposure_time=1 / 250, f_number=2.2, focal_length=6.3, make="Samsung",
        model="SM-S937B", datetime="2025:05:04 18:30:12", gps=(48.8584, 2.2945),
    )
    path = tmp_path / "cap.dng"
    path.write_bytes(data)
    dev = develop_file(path)
    assert dev.capture.iso == 3200 and dev.capture.exposure_time == pytest.approx(1 / 250)
    assert dev.capture.f_number == pytest.approx(2.2) and dev.capture.focal_length == pytest.approx(6.3)
    assert dev.capture.make == "Samsung" and dev.capture.model == "SM-S937B"
    assert dev.capture.timestamp == "2025-05-04T18:30:12"
    assert dev.sha256 == imageio.sha256_bytes(data) and dev.file_bytes == len(data)
    meta = dev.capture.as_meta()
    assert not any("gps" in k.lower() or "lat" in k.lower() for k in meta)
    assert "48.85" not in repr(meta) and "2.29" not in repr(meta)
    # the developed pixels are plain arrays; encoding writes no metadata at all
    assert imageio.private_metadata(imageio.encode_image(dev.rgb, "png")) == []


def test_capture_metadata_unknown_values_keep_their_types(scene8):
    data = rgb8_to_dng(scene8, iso=None, exposure_time=None, f_number=None, focal_length=None, datetime=None)
    info = capture_metadata(data)
    got = (info.iso, info.exposure_time, info.f_number, info.focal_length, info.timestamp)
    assert got == (-1, -1.0, -1.0, -1.0, "")


def test_iso_group():
    groups = (3200, 1600, 800)
    assert [iso_group(i, groups) for i in (3200, 1600, 800)] == ["iso3200", "iso1600", "iso800"]
    assert iso_group(2500, groups) == "iso3200" and iso_group(1000, groups) == "iso800"
    assert iso_group(12800, groups) == "iso3200" and iso_group(50, groups) == "iso800"
    assert iso_group(-1, groups) == "iso-unknown" and iso_group(800, ()) == "iso-unknown"


# ---- bad input ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_dng(scene8):
    return rgb8_to_dng(scene8)


@pytest.mark.parametrize("fraction", [0.002, 0.05, 0.4, 0.9, 0.999])
def test_truncated_dng_is_reported_as_truncated(good_dng, fraction):
    with pytest.raises(RawDecodeError) as exc:
        develop(good_dng[: int(len(good_dng) * fraction)], source="cut.dng")
    assert exc.value.reason == "truncated"
    assert "cut.dng" in str(exc.value)


@pytest.mark.parametrize("compression", ["none", pytest.param("jpegxl", marks=needs_jxl)])
def test_a_dng_cut_anywhere_is_never_developed(scene8, compression):
    """Wherever a copy stops (raw data, preview, EXIF IFD, its last byte), the file is refused."""
    data = rgb8_to_dng(scene8, compression=compression)
    for cut in [*np.linspace(16, len(data) - 16, 23).astype(int), len(data) - 60, len(data) - 1]:
        with pytest.raises(RawDecodeError) as exc:
            develop(data[:cut])
        assert exc.value.reason == "truncated", (cut, str(exc.value))


@pytest.mark.parametrize(
    ("make", "reason", "words"),
    [
        (lambda s: imageio.encode_image(s, "jpeg"), "not_raw", "JPEG image"),
        (lambda s: rgb8_to_dng(s, compression=50000), "unsupported_compression", "ZSTD"),
        (lambda s: rgb8_to_dng(s, omit_tags=frozenset({33422})), "missing_tags", "CFAPattern"),
        (lambda s: rgb8_to_dng(s, omit_tags=frozenset({50721})), "missing_tags", "ColorMatrix1"),
        (lambda s: b"", "empty", "0 bytes"),
        (lambda s: np.random.default_rng(0).bytes(4096), "not_raw", "LibRaw"),
    ],
    ids=["jpeg-renamed", "zstd-compression", "no-cfapattern", "no-colormatrix", "empty", "noise"],
)
def test_bad_files_raise_a_clear_reason(scene8, make, reason, words):
    with pytest.raises(RawDecodeError) as exc:
        develop(make(scene8), source="IMG_0001.dng")
    assert exc.value.reason == reason
    assert words in str(exc.value)


def test_jpegxl_dng_without_a_jpegxl_decoder_is_unsupported(scene8, monkeypatch):
    if not jpegxl_available():
        pytest.skip("cannot write the JPEG-XL file to test with")
    data = rgb8_to_dng(scene8, compression="jpegxl")
    monkeypatch.setattr("inscene.raw.jpegxl_available", lambda: False)
    with pytest.raises(RawDecodeError) as exc:
        develop(data)
    assert exc.value.reason == "unsupported_compression" and "JPEG XL" in str(exc.value)


def test_too_large_is_refused_before_decoding(good_dng):
    with pytest.raises(RawDecodeError) as exc:
        develop(good_dng, max_pixels=1000)
    assert exc.value.reason == "too_large"


def test_dng_spec_rejects_unknown_fields_and_bad_shapes():
    with pytest.raises(TypeError):
        write_dng(np.zeros((8, 8), np.uint16), DngSpec(), not_a_field=1)
    with pytest.raises(ValueError):
        write_dng(np.zeros((8, 8, 3), np.uint16), cfa_pattern="RGGB")
