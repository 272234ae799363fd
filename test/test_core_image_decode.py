"""Image decoding (raw encodings with step padding, JPEG, PNG), errors and the decode cache."""
import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import simplejpeg
from PIL import Image

from alpamayo_ros.core import image_decode
from alpamayo_ros.core.errors import DecodeError
from alpamayo_ros.core.image_decode import DecodeCache, EncodedImage, decode_image

H, W = 6, 10


def reference_rgb(seed=0):
    return np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8)


def padded(pixels: np.ndarray, pad: int) -> bytes:
    """Rows of `pixels` (H, W, C) each followed by `pad` junk bytes."""
    rows = pixels.reshape(pixels.shape[0], -1)
    junk = np.full((rows.shape[0], pad), 0xAB, np.uint8)
    return np.concatenate([rows, junk], axis=1).tobytes()


@pytest.mark.parametrize("encoding,order", [("rgb8", [0, 1, 2]), ("bgr8", [2, 1, 0]),
                                            ("rgba8", [0, 1, 2, 3]), ("bgra8", [2, 1, 0, 3])])
@pytest.mark.parametrize("pad", [0, 5])
def test_raw_encodings_respect_channel_order_and_step(encoding, order, pad):
    rgb = reference_rgb()
    channels = rgb if len(order) == 3 else np.concatenate(
        [rgb, np.full((H, W, 1), 77, np.uint8)], axis=2)
    stored = np.ascontiguousarray(channels[:, :, order])
    bpp = stored.shape[2]
    image = EncodedImage(encoding, H, W, W * bpp + pad, padded(stored, pad))
    out = decode_image(image)
    assert out.dtype == np.uint8 and out.shape == (H, W, 3) and out.flags.c_contiguous
    np.testing.assert_array_equal(out, rgb)


def test_mono8_is_replicated_to_rgb():
    gray = reference_rgb()[:, :, 0]
    out = decode_image(EncodedImage("mono8", H, W, W + 3, padded(gray[:, :, None], 3)))
    np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))


def test_memoryview_and_numpy_data_accepted():
    rgb = reference_rgb()
    out = decode_image(EncodedImage("rgb8", H, W, 0, memoryview(rgb.tobytes())))
    np.testing.assert_array_equal(out, rgb)
    out = decode_image(EncodedImage("rgb8", H, W, W * 3, rgb.reshape(-1)))
    np.testing.assert_array_equal(out, rgb)


def test_jpeg_and_png():
    rng = np.random.default_rng(1)
    # Smooth image so JPEG is close to the original.
    base = np.linspace(0, 255, 64 * 48, dtype=np.float64).reshape(48, 64)
    rgb = np.stack([base, base[::-1], np.full_like(base, 128)], axis=2).astype(np.uint8)
    jpeg = simplejpeg.encode_jpeg(rgb, quality=95, colorspace="RGB")
    out = decode_image(EncodedImage("jpeg", 48, 64, 0, jpeg))
    assert out.shape == (48, 64, 3)
    assert np.mean(np.abs(out.astype(int) - rgb.astype(int))) < 3.0
    noisy = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy).save(buf, format="PNG")
    out = decode_image(EncodedImage("png", 0, 0, 0, buf.getvalue()))
    np.testing.assert_array_equal(out, noisy)  # PNG is lossless


def test_corrupt_jpeg():
    jpeg = simplejpeg.encode_jpeg(reference_rgb(), colorspace="RGB")
    with pytest.raises(DecodeError, match="corrupt jpeg image"):
        decode_image(EncodedImage("jpeg", H, W, 0, jpeg[: len(jpeg) // 3]))
    with pytest.raises(DecodeError, match="corrupt jpeg image"):
        decode_image(EncodedImage("jpeg", H, W, 0, b"not a jpeg at all"))


def test_compressed_size_mismatch_and_wrong_format():
    jpeg = simplejpeg.encode_jpeg(reference_rgb(), colorspace="RGB")
    with pytest.raises(DecodeError, match=r"header says 12x10, data decodes to 6x10"):
        decode_image(EncodedImage("jpeg", 12, 10, 0, jpeg))
    with pytest.raises(DecodeError, match="data is jpeg, but encoding says png"):
        decode_image(EncodedImage("png", 0, 0, 0, jpeg))
    with pytest.raises(DecodeError, match="png image has no data"):
        decode_image(EncodedImage("png", 0, 0, 0, b""))


def test_raw_size_mismatch_step_and_encoding_errors():
    data = reference_rgb().tobytes()
    with pytest.raises(DecodeError, match=r"have 179 bytes, need 180 \(height 6 x step 30\)"):
        decode_image(EncodedImage("rgb8", H, W, W * 3, data[:-1]))
    with pytest.raises(DecodeError, match=r"have 180 bytes, need 210 \(height 7 x step 30\)"):
        decode_image(EncodedImage("rgb8", 7, W, W * 3, data))
    with pytest.raises(DecodeError, match=r"step too small: have 20 bytes per row, need >= 30"):
        decode_image(EncodedImage("rgb8", H, W, 20, data))
    with pytest.raises(DecodeError, match="needs a positive size"):
        decode_image(EncodedImage("bgr8", 0, W, 0, data))
    strided = np.zeros((H, W * 6), np.uint8)[:, ::2]
    with pytest.raises(DecodeError, match="must be contiguous bytes"):
        decode_image(EncodedImage("rgb8", H, W, W * 3, strided))
    with pytest.raises(DecodeError, match=r"unsupported image encoding '16UC1'"):
        decode_image(EncodedImage("16UC1", H, W, W * 2, data))


def test_cache_decodes_each_key_once_and_evicts_lru():
    calls = []

    def counting_decoder(image):
        calls.append(image)
        return decode_image(image)

    cache = DecodeCache(capacity=2, decoder=counting_decoder)
    images = {k: EncodedImage("rgb8", H, W, 0, reference_rgb(k).tobytes()) for k in range(3)}
    a = cache.get_or_decode((0, 1), images[0])
    b = cache.get_or_decode((0, 1), images[0])
    assert a is b and len(calls) == 1 and cache.hits == 1 and cache.decodes == 1
    assert not a.flags.writeable  # shared across ticks, so read-only
    cache.get_or_decode((0, 2), images[1])
    cache.get_or_decode((0, 1), images[0])  # refresh (0, 1): (0, 2) is now oldest
    cache.get_or_decode((0, 3), images[2])  # evicts (0, 2)
    assert len(cache) == 2 and cache.decodes == 3
    cache.get_or_decode((0, 1), images[0])
    assert cache.decodes == 3
    cache.get_or_decode((0, 2), images[1])
    assert cache.decodes == 4
    cache.clear()
    assert len(cache) == 0
    cache.get_or_decode((0, 1), images[0])
    assert cache.decodes == 5


def test_cache_resizes_to_requested_size():
    cache = DecodeCache(capacity=4)
    out = cache.get_or_decode((1, 5), EncodedImage("rgb8", H, W, 0, reference_rgb().tobytes()),
                              size_wh=(40, 32))
    assert out.shape == (32, 40, 3) and out.dtype == np.uint8


def test_cache_remembers_errors_so_a_bad_frame_is_tried_once():
    calls = []

    def counting_decoder(image):
        calls.append(image)
        return decode_image(image)

    cache = DecodeCache(capacity=2, decoder=counting_decoder)
    bad = EncodedImage("jpeg", H, W, 0, b"garbage")
    messages = []
    for _ in range(3):  # three ticks selecting the same frame
        with pytest.raises(DecodeError) as info:
            cache.get_or_decode((0, 1), bad)
        messages.append(str(info.value))
    assert len(calls) == 1 and cache.failures == 1 and cache.failure_hits == 2
    assert messages == [messages[0]] * 3 and "corrupt jpeg image" in messages[0]
    assert len(cache) == 0 and cache.decodes == 0
    # Failures have their own LRU: many bad frames never evict a decoded one.
    good = EncodedImage("rgb8", H, W, 0, reference_rgb().tobytes())
    frame = cache.get_or_decode((1, 1), good)
    for stamp in range(2, 10):
        with pytest.raises(DecodeError):
            cache.get_or_decode((0, stamp), bad)
    assert cache.get_or_decode((1, 1), good) is frame and cache.decodes == 1
    # The oldest failure was evicted (capacity 2): that key is decoded again.
    with pytest.raises(DecodeError):
        cache.get_or_decode((0, 2), bad)
    assert len(calls) == 1 + 8 + 1 + 1
    # clear() (a time jump) forgets failures too.
    cache.clear()
    with pytest.raises(DecodeError):
        cache.get_or_decode((0, 9), bad)
    assert len(calls) == 12


# ---------------------------------------------------------------- hostile frames
MAX_8K = 7680 * 4320


def hostile_jpeg(height: int, width: int) -> bytes:
    """A valid 16x16 baseline JPEG whose SOF0 header claims height x width."""
    small = simplejpeg.encode_jpeg(np.full((16, 16, 3), 128, np.uint8), quality=50,
                                   colorspace="RGB")
    sof = small.find(b"\xff\xc0")  # SOF0: marker, length (2), precision (1), height, width
    assert sof > 0
    data = bytearray(small)
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


def png_claiming(height: int, width: int) -> bytes:
    """A PNG whose IHDR claims height x width, with one tiny IDAT (spec layout, CRCs)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def test_hostile_jpeg_is_refused_from_its_header_without_decoding(monkeypatch):
    data = hostile_jpeg(20000, 20000)
    assert len(data) < 1000 and simplejpeg.decode_jpeg_header(data)[:2] == (20000, 20000)
    decodes = []
    real = image_decode.simplejpeg.decode_jpeg
    monkeypatch.setattr(image_decode.simplejpeg, "decode_jpeg",
                        lambda *a, **k: decodes.append(1) or real(*a, **k))
    tracemalloc.start()
    try:
        with pytest.raises(DecodeError) as info:
            decode_image(EncodedImage("jpeg", 0, 0, 0, data))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert decodes == []  # the full decode (1.2 GB, seconds of CPU) never ran
    assert peak < 1_000_000  # bytes; decoding would allocate 20000 * 20000 * 3
    assert str(info.value) == ("jpeg image of 20000x20000 px (WxH, JPEG header): have "
                               f"400000000 pixels, need <= {MAX_8K} (core.max_image_pixels); "
                               "not decoded")
    # Through the cache, the refusal is remembered: no second header read either.
    headers = []
    real_header = image_decode.simplejpeg.decode_jpeg_header
    monkeypatch.setattr(image_decode.simplejpeg, "decode_jpeg_header",
                        lambda *a, **k: headers.append(1) or real_header(*a, **k))
    cache = DecodeCache(capacity=16)
    for _ in range(4):
        with pytest.raises(DecodeError, match="need <= 33177600"):
            cache.get_or_decode((3, 7), EncodedImage("jpeg", 0, 0, 0, data))
    assert headers == [1] and decodes == [] and cache.failures == 1


def test_pixel_limit_is_a_parameter_of_decode_and_cache():
    rgb = reference_rgb()
    jpeg = simplejpeg.encode_jpeg(rgb, colorspace="RGB")
    assert decode_image(EncodedImage("jpeg", H, W, 0, jpeg), max_pixels=H * W).shape == (H, W, 3)
    with pytest.raises(DecodeError, match=f"have {H * W} pixels, need <= {H * W - 1}"):
        decode_image(EncodedImage("jpeg", H, W, 0, jpeg), max_pixels=H * W - 1)
    raw = EncodedImage("rgb8", H, W, 0, rgb.tobytes())
    with pytest.raises(DecodeError, match=r"rgb8 image of 10x6 px \(WxH, message fields\)"):
        DecodeCache(capacity=4, max_pixels=59).get_or_decode((0, 1), raw)
    np.testing.assert_array_equal(DecodeCache(capacity=4, max_pixels=60).get_or_decode(
        (0, 1), raw), rgb)


def test_hostile_png_is_refused_from_its_header(monkeypatch):
    converts = []
    real = Image.Image.convert
    monkeypatch.setattr(Image.Image, "convert",
                        lambda *a, **k: converts.append(1) or real(*a, **k))
    # Above our limit, below PIL's own decompression-bomb limits.
    with pytest.raises(DecodeError) as info:
        decode_image(EncodedImage("png", 0, 0, 0, png_claiming(6000, 7000)))
    assert str(info.value) == ("png image of 7000x6000 px (WxH, PNG header): have 42000000 "
                               f"pixels, need <= {MAX_8K} (core.max_image_pixels); not decoded")
    # Far above: PIL's own check refuses first, still from the header.
    with pytest.raises(DecodeError, match=r"png image refused from its header: .*need <= "):
        decode_image(EncodedImage("png", 0, 0, 0, png_claiming(20000, 20000)))
    assert converts == []
    # A raw frame above the limit is refused before its bytes are even looked at.
    with pytest.raises(DecodeError, match=r"rgb8 image of 8000x5000 px .*have 40000000 pixels"):
        decode_image(EncodedImage("rgb8", 5000, 8000, 0, b"tiny"))


def test_planner_core_uses_the_configured_limit_and_tries_a_bad_frame_once(monkeypatch):
    from alpamayo_ros.core.config import PlannerConfig
    from alpamayo_ros.core.kinematic_model import ConstantVelocityModel
    from alpamayo_ros.core.planner_core import PlannerCore, PlanStatus
    from core_scenarios import Scenario, now_ns

    headers = []
    real_header = image_decode.simplejpeg.decode_jpeg_header
    monkeypatch.setattr(image_decode.simplejpeg, "decode_jpeg_header",
                        lambda *a, **k: headers.append(1) or real_header(*a, **k))
    scenario = Scenario(camera_phases=(0.0,) * 4)
    core = PlannerCore(PlannerConfig(), ConstantVelocityModel())
    scenario.advance(core, 2.9)
    core.add_image(3, now_ns(2.9), EncodedImage("jpeg", 0, 0, 0, hostile_jpeg(20000, 20000)))
    reasons = [core.tick(now_ns(2.9 + 0.01 * k)) for k in range(3)]
    assert all(r.status == PlanStatus.SKIPPED for r in reasons)
    assert all("camera slot 3 (index 6, front_tele_30fov)" in r.reason
               and "need <= 33177600 (core.max_image_pixels)" in r.reason for r in reasons)
    assert headers == [1]  # one look at the header for three ticks
    # The limit comes from PlannerConfig.max_image_pixels: 30x40 frames pass 1200, not 1199.
    for limit, status in ((1200, PlanStatus.OK), (1199, PlanStatus.SKIPPED)):
        scenario = Scenario(image_size=(30, 40))
        core = PlannerCore(PlannerConfig(max_image_pixels=limit), ConstantVelocityModel())
        scenario.advance(core, 3.0)
        result = core.tick(now_ns(3.0))
        assert result.status == status, result.reason
        assert status == PlanStatus.OK or "have 1200 pixels, need <= 1199" in result.reason
