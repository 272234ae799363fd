"""Camera images kept undecoded until selected, decoded to RGB uint8 HWC, cached across ticks.

`EncodedImage` is what the node (sensor_msgs/Image or CompressedImage) and the replay
tool hand to the core. `decode_image` turns it into a contiguous (H, W, 3) uint8 RGB array.
`DecodeCache` keeps decoded frames keyed by (camera slot, stamp ns) so each frame is
decoded at most once while it stays in the cache (at 10 Hz, 12 of the 16 frames of a tick
were used by the previous tick).
"""
from __future__ import annotations

import io
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Optional, Union

import numpy as np

from alpamayo_ros.core.errors import DecodeError

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


def _decode_raw(image: EncodedImage, encoding: str) -> np.ndarray:
    bpp, channels = RAW_ENCODINGS[encoding]
    h, w = int(image.height), int(image.width)
    if h <= 0 or w <= 0:
        raise DecodeError(f"{encoding} image needs a positive size, have {h}x{w} (HxW)")
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


def _decode_compressed(image: EncodedImage, encoding: str) -> np.ndarray:
    raw = _as_byte_array(image.data, encoding).tobytes()
    if not raw:
        raise DecodeError(f"{encoding} image has no data")
    try:
        if encoding == "jpeg" and simplejpeg is not None:
            rgb = simplejpeg.decode_jpeg(raw, colorspace="RGB")
        else:
            from PIL import Image  # PIL decodes PNG and is the JPEG fallback
            with Image.open(io.BytesIO(raw)) as pil:
                fmt = (pil.format or "").lower()
                if fmt != encoding:
                    raise DecodeError(f"data is {fmt or 'not an image'}, "
                                      f"but encoding says {encoding}")
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


def decode_image(image: EncodedImage) -> np.ndarray:
    """Decode to a contiguous (H, W, 3) uint8 RGB array; raises DecodeError."""
    encoding = normalised_encoding(image.encoding)
    if encoding in RAW_ENCODINGS:
        return _decode_raw(image, encoding)
    if encoding in COMPRESSED_ENCODINGS:
        return _decode_compressed(image, encoding)
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
    `clear()` starts a new epoch: a decode that was running during the clear does not
    store its (now stale) result.
    """

    def __init__(self, capacity: int,
                 decoder: Callable[[EncodedImage], np.ndarray] = decode_image) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, have {capacity}")
        self._capacity = int(capacity)
        self._decoder = decoder
        self._entries: "OrderedDict[tuple, np.ndarray]" = OrderedDict()
        self._lock = threading.Lock()
        self._epoch = 0
        self.decodes = 0
        self.hits = 0
        self.decode_seconds = 0.0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._epoch += 1

    def get_or_decode(self, key: tuple, image: EncodedImage,
                      size_wh: Optional[tuple] = None) -> np.ndarray:
        """The decoded frame for key (decoding `image` on a miss); raises DecodeError."""
        with self._lock:
            cached = self._entries.get(key)
            if cached is not None:
                self._entries.move_to_end(key)
                self.hits += 1
                return cached
            epoch = self._epoch
        start = time.perf_counter()
        rgb = self._decoder(image)
        if size_wh is not None:
            rgb = resize_rgb(rgb, size_wh)
        rgb.setflags(write=False)  # shared across ticks: nobody may modify it
        evicted = []
        with self._lock:
            self.decodes += 1
            if epoch == self._epoch:
                self._entries[key] = rgb
                self._entries.move_to_end(key)
                while len(self._entries) > self._capacity:
                    evicted.append(self._entries.popitem(last=False))
        # Freeing evicted frames (MBs each) is part of the cost of this decode.
        del evicted
        elapsed = time.perf_counter() - start
        with self._lock:
            self.decode_seconds += elapsed
        return rgb
