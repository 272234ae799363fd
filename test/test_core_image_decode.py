"""Image decoding (raw encodings with step padding, JPEG, PNG), errors and the decode cache."""
import io

import numpy as np
import pytest
import simplejpeg
from PIL import Image

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


def test_cache_does_not_store_errors():
    cache = DecodeCache(capacity=4)
    bad = EncodedImage("jpeg", H, W, 0, b"garbage")
    for _ in range(2):
        with pytest.raises(DecodeError):
            cache.get_or_decode((0, 1), bad)
    assert len(cache) == 0
