"""Camera images kept undecoded until selected, decoded to RGB uint8 HWC, cached across ticks.

`EncodedImage` is what the node (sensor_msgs/Image or CompressedImage) and the replay
tool hand to the core. `decode_image` turns it into a contiguous (H, W, 3) uint8 RGB array.
`DecodeCache` keeps decoded frames keyed by (camera slot, stamp ns) so each frame is
decoded at most once while it stays in the cache (at 10 Hz, 12 of the 16 frames of a tick
were used by the previous tick); a frame that cannot be decoded is remembered as such, so
it is tried once, not on every tick that selects it.

Hostile frames are cheap: the size is known before any pixel is decoded (raw: the message
fields; JPEG: simplejpeg.decode_jpeg_header; PNG and the PIL fallback: PIL's lazy
Image.open, which reads only the header) and a frame above `max_pixels`
(core.max_image_pixels) is refused with a DecodeError. A 632-byte JPEG whose header
claims 20000x20000 px cost 3.8 s of CPU and 1.2 GB per decode before this check.
"""
from __future__ import annotations

import functools
import io
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Optional, Union

import numpy as np

from alpamayo_ros.core.errors import ConfigError, DecodeError

try:  # simplejpeg (libjpeg-turbo) is the fast path; PIL is the fallback.
    import simplejpeg
except ImportError:  # pragma: no cover - depends on the environment
    simplejpeg = None

RAW_ENCODINGS = {
    # encoding: (bytes per pixel, channel indices giving R, G, B)
    "rgb8": (3, (0, 1, 2)),
    "bgr8": (3, (2, 1, 0)),
    "rgba8": (4, (0, 1, 2)),
    "bgra8": (4, (2, 1, 0)),
    "mono8": (1, (0, 0, 0)),
}
COMPRESSED_ENCODINGS = ("jpeg", "png")
SUPPORTED_ENCODINGS = tuple(RAW_ENCODINGS) + COMPRESSED_ENCODINGS
# Encodings encode_frame writes (synthetic cameras: raw Images or JPEG CompressedImages).
FRAME_ENCODINGS = ("rgb8", "bgr8", "bgra8", "jpeg")
# Default pixel limit of one frame: 8K UHD (7680 x 4320), four times a 4K frame; the
# largest limit allowed (core.max_image_pixels) stays below PIL's own decompression-bomb
# error (2 x PIL.Image.MAX_IMAGE_PIXELS = 178,956,970 px), so PIL never refuses first.
DEFAULT_MAX_IMAGE_PIXELS = 7680 * 4320
MAX_IMAGE_PIXELS_LIMIT = 100_000_000


@dataclass(frozen=True)
class EncodedImage:
    """One camera frame as received, not decoded.

    encoding: one of SUPPORTED_ENCODINGS (sensor_msgs/Image encodings, or "jpeg"/"png" for
        CompressedImage; "jpg" is accepted as "jpeg").
    height, width [px]: required for raw encodings; for compressed ones the decoded size is
        checked against them when they are > 0 (0 = unknown).
    step: bytes per row for raw encodings (>= width * bytes per pixel; padding is skipped);
        0 means tightly packed.
    data: the pixel bytes (bytes, bytearray, memoryview or a uint8 numpy array).
    """

    encoding: str
    height: int
    width: int
    step: int
    data: Union[bytes, bytearray, memoryview, np.ndarray]

    @property
    def nbytes(self) -> int:
        return memoryview(self.data).nbytes


def checked_raw_image(encoding: str, height: int, width: int, step: int,
                      data) -> EncodedImage:
    """EncodedImage of a raw sensor_msgs/Image payload, checked before it is buffered.

    Shared by the node (rclpy messages) and the replay (rosbags messages), so a frame is
    accepted or refused the same way live and in replay. data: uint8 numpy array (a view
    of the message buffer, no copy). Raises DecodeError for an unsupported encoding or a
    size that does not match height x step.
    """
    enc = encoding.strip().lower()
    if enc not in RAW_ENCODINGS:
        raise DecodeError(f"unsupported image encoding {encoding!r}; supported: "
                          f"{', '.join(RAW_ENCODINGS)} (or a CompressedImage topic)")
    bpp = RAW_ENCODINGS[enc][0]
    height, width = int(height), int(width)
    row = int(step) or width * bpp
    what = f"{enc} image {width}x{height} (WxH)"
    if height <= 0 or width <= 0:
        raise DecodeError(f"{what} has no pixels: need width and height >= 1")
    if row < width * bpp:
        raise DecodeError(f"{what}: step {step} is shorter than a row, need step >= "
                          f"{width * bpp} (width {width} x {bpp} bytes per pixel)")
    if data.size != row * height:
        raise DecodeError(f"{what}, step {row}: have {data.size} data bytes, need "
                          f"{row * height} (height {height} x step {row})")
    return EncodedImage(encoding=enc, height=height, width=width, step=row, data=data)


_SIGNATURES = {"jpeg": b"\xff\xd8", "png": b"\x89PNG"}


def checked_compressed_image(fmt: str, data: np.ndarray) -> EncodedImage:
    """EncodedImage of a sensor_msgs/CompressedImage payload, checked before it is buffered.

    The compressed twin of `checked_raw_image`, shared by node and replay the same way.
    The codec is the one the format names (image_transport writes "jpeg", "png" or
    "bgr8; jpeg compressed bgr8"); an empty format falls back to the signature bytes.
    data: uint8 numpy array (a view of the message buffer). Raises DecodeError for empty
    data, an unsupported format, or data whose signature contradicts the format;
    corruption inside the stream is found when the frame is decoded. Size unknown (0).
    """
    if data.size == 0:
        raise DecodeError("CompressedImage has no data")
    head = bytes(data[:4])
    text = fmt.lower()
    if "jpeg" in text or "jpg" in text:
        codec = "jpeg"
    elif "png" in text:
        codec = "png"
    else:
        sniffed = [c for c, sig in _SIGNATURES.items() if head.startswith(sig)]
        if text or not sniffed:
            raise DecodeError(f"unsupported CompressedImage format {fmt!r}; need jpeg or png")
        codec = sniffed[0]
    if not head.startswith(_SIGNATURES[codec]):
        raise DecodeError(f"CompressedImage says {codec} ({fmt!r}) but the data does not "
                          f"start with the {codec} signature (have {head!r})")
    return EncodedImage(encoding=codec, height=0, width=0, step=0, data=data)


def normalised_encoding(encoding: str) -> str:
    """Lower-case encoding name with "jpg" spelled "jpeg"."""
    enc = encoding.strip().lower()
    return "jpeg" if enc == "jpg" else enc


def is_supported_encoding(encoding: str) -> bool:
    return normalised_encoding(encoding) in SUPPORTED_ENCODINGS


def _as_byte_array(data, encoding: str) -> np.ndarray:
    """A flat uint8 view of bytes / bytearray / memoryview / contiguous numpy data."""
    try:
        return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    except (TypeError, ValueError) as exc:
        raise DecodeError(f"{encoding} image data must be contiguous bytes, have "
                          f"{type(data).__name__}: {exc}") from exc


def _check_pixels(encoding: str, height: int, width: int, max_pixels: Optional[int],
                  source: str) -> None:
    """DecodeError when height x width exceeds max_pixels (None = no limit)."""
    if max_pixels is not None and height * width > max_pixels:
        raise DecodeError(f"{encoding} image of {width}x{height} px (WxH, {source}): have "
                          f"{height * width} pixels, need <= {max_pixels} "
                          "(core.max_image_pixels); not decoded")


def _decode_raw(image: EncodedImage, encoding: str, max_pixels: Optional[int]) -> np.ndarray:
    bpp, channels = RAW_ENCODINGS[encoding]
    h, w = int(image.height), int(image.width)
    if h <= 0 or w <= 0:
        raise DecodeError(f"{encoding} image needs a positive size, have {h}x{w} (HxW)")
    _check_pixels(encoding, h, w, max_pixels, "message fields")
    step = int(image.step) if image.step else w * bpp
    if step < w * bpp:
        raise DecodeError(f"{encoding} image step too small: have {step} bytes per row, "
                          f"need >= {w * bpp} (width {w} x {bpp} bytes)")
    buf = _as_byte_array(image.data, encoding)
    if buf.size != step * h:
        raise DecodeError(f"{encoding} image data size mismatch: have {buf.size} bytes, "
                          f"need {step * h} (height {h} x step {step})")
    rows = buf.reshape(h, step)[:, : w * bpp].reshape(h, w, bpp)
    # Always an owned copy: the message buffer may be reused or freed by the caller.
    if encoding == "rgb8":
        return np.array(rows, dtype=np.uint8, order="C", copy=True)
    out = np.empty((h, w, 3), dtype=np.uint8)
    for dst, src in enumerate(channels):
        out[:, :, dst] = rows[:, :, src]
    return out


def _decode_compressed(image: EncodedImage, encoding: str,
                       max_pixels: Optional[int]) -> np.ndarray:
    raw = _as_byte_array(image.data, encoding).tobytes()
    if not raw:
        raise DecodeError(f"{encoding} image has no data")
    try:
        if encoding == "jpeg" and simplejpeg is not None:
            h, w = simplejpeg.decode_jpeg_header(raw)[:2]
            _check_pixels(encoding, h, w, max_pixels, "JPEG header")
            rgb = simplejpeg.decode_jpeg(raw, colorspace="RGB")
        else:
            from PIL import Image  # PIL decodes PNG and is the JPEG fallback
            # Image.open reads only the header (size, format); pixels are decoded by convert.
            try:
                opened = Image.open(io.BytesIO(raw))
            except Image.DecompressionBombError as exc:  # above 2 x PIL's MAX_IMAGE_PIXELS
                raise DecodeError(f"{encoding} image refused from its header: {exc}; need <= "
                                  f"{max_pixels} pixels (core.max_image_pixels)") from exc
            with opened as pil:
                fmt = (pil.format or "").lower()
                if fmt != encoding:
                    raise DecodeError(f"data is {fmt or 'not an image'}, "
                                      f"but encoding says {encoding}")
                _check_pixels(encoding, pil.height, pil.width, max_pixels,
                              f"{fmt.upper()} header")
                rgb = np.asarray(pil.convert("RGB"))
    except DecodeError:
        raise
    except Exception as exc:  # simplejpeg/PIL raise ValueError, OSError, ...
        raise DecodeError(f"corrupt {encoding} image ({len(raw)} bytes): {exc}") from exc
    h, w = rgb.shape[:2]
    if (image.height > 0 and image.height != h) or (image.width > 0 and image.width != w):
        raise DecodeError(f"{encoding} image size mismatch: header says "
                          f"{image.height}x{image.width}, data decodes to {h}x{w} (HxW)")
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def decode_image(image: EncodedImage,
                 max_pixels: Optional[int] = DEFAULT_MAX_IMAGE_PIXELS) -> np.ndarray:
    """Decode to a contiguous (H, W, 3) uint8 RGB array; raises DecodeError.

    A frame larger than max_pixels (None = no limit) is refused from its header, before
    any pixel is decoded or allocated.
    """
    encoding = normalised_encoding(image.encoding)
    if encoding in RAW_ENCODINGS:
        return _decode_raw(image, encoding, max_pixels)
    if encoding in COMPRESSED_ENCODINGS:
        return _decode_compressed(image, encoding, max_pixels)
    raise DecodeError(f"unsupported image encoding {image.encoding!r}; supported: "
                      f"{', '.join(SUPPORTED_ENCODINGS)}")


def resize_rgb(rgb: np.ndarray, size_wh: tuple) -> np.ndarray:
    """Resize an RGB uint8 image to (width, height) [px] with PIL's bilinear filter."""
    w, h = int(size_wh[0]), int(size_wh[1])
    if rgb.shape[1] == w and rgb.shape[0] == h:
        return rgb
    from PIL import Image
    return np.asarray(Image.fromarray(rgb).resize((w, h), Image.Resampling.BILINEAR))


class DecodeCache:
    """LRU of decoded frames keyed by (camera slot, stamp ns); thread-safe.

    `get_or_decode` decodes (and optionally resizes) on a miss and counts decodes and hits.
    A DecodeError is remembered for its key as well (in an LRU of its own, so bad frames
    never evict good ones): the same frame raises the same error again without a second
    decode (`failures` counts the first attempts, `failure_hits` the repeats).
    `clear()` starts a new epoch: a decode that was running during the clear does not
    store its (now stale) result. A key is decoded by one thread at a time: a second
    caller for a key being decoded waits for that decode (decode-ahead threads and the
    tick share the cache, see core/frame_decoder.py).

    decoder: the decoding function; default `decode_image` with `max_pixels`.
    """

    def __init__(self, capacity: int,
                 decoder: Optional[Callable[[EncodedImage], np.ndarray]] = None,
                 max_pixels: Optional[int] = DEFAULT_MAX_IMAGE_PIXELS) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, have {capacity}")
        self._capacity = int(capacity)
        self._decoder = decoder if decoder is not None else functools.partial(
            decode_image, max_pixels=max_pixels)
        self._entries: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
        self._failed: "OrderedDict[tuple, str]" = OrderedDict()
        self._lock = threading.Lock()
        self._decoded = threading.Condition(self._lock)  # a decode in flight ended
        self._in_flight: set = set()
        self._epoch = 0
        self.decodes = 0
        self.hits = 0
        self.failures = 0
        self.failure_hits = 0
        self.decode_seconds = 0.0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def contains(self, key: tuple, touch: bool = False) -> bool:
        """True when key is decoded (or its decode failed) or being decoded now; touch:
        count a decoded key as just used (LRU), as for a frame still wanted."""
        with self._lock:
            if touch and key in self._entries:
                self._entries.move_to_end(key)
            return key in self._entries or key in self._failed or key in self._in_flight

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._failed.clear()
            self._epoch += 1

    def _remember(self, entries: OrderedDict, key: tuple, value, epoch: int) -> list:
        """Store under the lock when the epoch is unchanged; the evicted entries."""
        evicted = []
        if epoch == self._epoch:
            entries[key] = value
            entries.move_to_end(key)
            while len(entries) > self._capacity:
                evicted.append(entries.popitem(last=False))
        return evicted

    def get_or_decode(self, key: tuple, image: EncodedImage,
                      size_wh: Optional[tuple] = None) -> np.ndarray:
        """The decoded frame for key (decoding `image` on a miss); raises DecodeError,
        also for a key whose decode failed before (without decoding again)."""
        with self._lock:
            while True:
                cached = self._entries.get(key)
                if cached is not None:
                    self._entries.move_to_end(key)
                    self.hits += 1
                    return cached
                failed = self._failed.get(key)
                if failed is not None:
                    self._failed.move_to_end(key)
                    self.failure_hits += 1
                    raise DecodeError(failed)
                if key not in self._in_flight:
                    break
                self._decoded.wait()  # another thread decodes this key: use its result
            epoch = self._epoch
            self._in_flight.add(key)
        start = time.perf_counter()
        try:
            rgb = self._decoder(image)
            if size_wh is not None:
                rgb = resize_rgb(rgb, size_wh)
        except DecodeError as exc:
            with self._lock:
                self.failures += 1
                self._remember(self._failed, key, str(exc), epoch)
                self.decode_seconds += time.perf_counter() - start
                self._done_locked(key)
            raise
        except BaseException:
            with self._lock:
                self._done_locked(key)
            raise
        rgb.setflags(write=False)  # shared across ticks: nobody may modify it
        with self._lock:
            self.decodes += 1
            evicted = self._remember(self._entries, key, rgb, epoch)
            self._done_locked(key)
        # Freeing evicted frames (MBs each) is part of the cost of this decode.
        del evicted
        elapsed = time.perf_counter() - start
        with self._lock:
            self.decode_seconds += elapsed
        return rgb

    def _done_locked(self, key: tuple) -> None:
        """The decode of key ended (stored or not): wake the threads waiting for it."""
        self._in_flight.discard(key)
        self._decoded.notify_all()


def encode_frame(rgb: np.ndarray, encoding: str, jpeg_quality: int = 90):
    """A rendered RGB uint8 (H, W, 3) frame as a camera message payload.

    rgb8 / bgr8 / bgra8 (alpha 255): contiguous (H, W, C) uint8 pixels; jpeg: the JPEG
    bytes. Shared by the bag writer (bag/bag_io.py) and the live publishers
    (testbed/scenario_publisher.py, the simulator), so bags and live topics carry the same
    pixels.
    """
    if encoding == "jpeg":
        import simplejpeg  # libjpeg-turbo; only needed for JPEG cameras
        return simplejpeg.encode_jpeg(np.ascontiguousarray(rgb), quality=jpeg_quality,
                                      colorspace="RGB")
    if encoding == "bgra8":
        h, w = rgb.shape[:2]
        pixels = np.empty((h, w, 4), np.uint8)
        pixels[..., :3] = rgb[..., ::-1]
        pixels[..., 3] = 255
        return pixels
    if encoding == "bgr8":
        return np.ascontiguousarray(rgb[..., ::-1])
    if encoding == "rgb8":
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    raise ConfigError(f"cannot encode a frame as {encoding!r}; need one of {FRAME_ENCODINGS}")
