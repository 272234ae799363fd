"""Qwen3-VL image preprocessing in torch: uint8 camera frames -> ``pixel_values``.

The result equals what transformers' fast ``Qwen2VLImageProcessorFast`` (the class the
Qwen3-VL processor uses, torchvision backend) returns for uint8 input on the CPU:

1. ``smart_resize`` picks an output size that is a multiple of patch*merge (32 px) with a
   pixel count inside [min_pixels, max_pixels];
2. an antialiased bicubic resize **in uint8** (torchvision hands uint8 bicubic on the CPU to
   torch's native fixed-point kernel);
3. rescale 1/255 and normalise with mean/std, fused into ``(x - 255*mean) / (255*std)``
   in float32 like transformers does;
4. the still image is duplicated along time (temporal patch 2) and cut into
   (grid_t*grid_h*grid_w, C*T*P*P) patches, grouped by 2x2 merge windows.

Why not the transformers processor at run time: the fast one needs torchvision, which does
not import beside the torch here, and the slow PIL one is several times slower
(``bench/bench_image_preprocess.py`` prints the ratio). Why our own resize kernel on
non-CPU devices: torch has no native uint8 antialiased bicubic on CUDA, and the float path
(what torchvision does there) differs from the CPU kernel, by many 1/255 steps at
high-contrast edges, because it neither rounds nor clamps between the horizontal and the
vertical pass. :func:`resize_bicubic_uint8` reproduces the CPU kernel bit for bit with
integer tensor ops on any device.
"""
from __future__ import annotations

import functools
import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from alpamayo_ros.core.errors import CheckpointError, ModelInputError

__all__ = [
    "ImageProcessorConfig",
    "smart_resize",
    "resize_bicubic_uint8",
    "normalize_and_patchify",
    "preprocess_frames",
    "image_grid_thw",
]


def smart_resize(height: int, width: int, factor: int = 32, min_pixels: int = 163840,
                 max_pixels: int = 196608) -> tuple[int, int]:
    """Output (height, width) in pixels of the Qwen-VL resize rule.

    Both sides become multiples of ``factor`` (patch size x merge size), the aspect ratio is
    kept as well as that allows, and the pixel count lands in [min_pixels, max_pixels].
    Example: 1080x1920 -> 320x576; 180x320 -> 320x544.
    """
    if height <= 0 or width <= 0:
        raise ModelInputError(f"image size must be positive, have {height}x{width}")
    if max(height, width) / min(height, width) > 200:
        raise ModelInputError(
            f"image aspect ratio must be at most 200, have {height}x{width} "
            f"({max(height, width) / min(height, width):.1f})")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return int(h_bar), int(w_bar)


@dataclass(frozen=True)
class ImageProcessorConfig:
    """Constants of the Qwen3-VL image processor (defaults: the Alpamayo-R1 release).

    patch_size: side of one vision patch [px]. merge_size: patches merged per side into one
    LLM token. temporal_patch_size: frames per temporal patch (a still image is repeated).
    image_mean / image_std: per RGB channel, applied after scaling to [0, 1].
    min_pixels / max_pixels: pixel-count bounds of the resized image.
    """

    patch_size: int = 16
    merge_size: int = 2
    temporal_patch_size: int = 2
    image_mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    image_std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    min_pixels: int = 163840
    max_pixels: int = 196608
    rescale_factor: float = 1.0 / 255.0

    def __post_init__(self):
        for name in ("patch_size", "merge_size", "temporal_patch_size", "min_pixels",
                     "max_pixels"):
            if int(getattr(self, name)) <= 0:
                raise CheckpointError(f"image processor {name} must be > 0, have "
                                      f"{getattr(self, name)}")
        if self.min_pixels > self.max_pixels:
            raise CheckpointError(f"image processor min_pixels ({self.min_pixels}) must not "
                                  f"exceed max_pixels ({self.max_pixels})")
        if len(self.image_mean) != 3 or len(self.image_std) != 3:
            raise CheckpointError(f"image_mean/image_std need 3 values, have "
                                  f"{len(self.image_mean)}/{len(self.image_std)}")
        if any(s <= 0 for s in self.image_std):
            raise CheckpointError(f"image_std must be > 0, have {self.image_std}")

    @property
    def resize_factor(self) -> int:
        """Side multiple of the resized image [px] (patch_size x merge_size)."""
        return self.patch_size * self.merge_size

    @classmethod
    def from_dir(cls, processor_dir, *, min_pixels: Optional[int] = None,
                 max_pixels: Optional[int] = None) -> "ImageProcessorConfig":
        """Read ``preprocessor_config.json`` of a base-VLM / processor directory.

        Pixel bounds come from ``min_pixels``/``max_pixels`` or, as transformers writes
        them, ``size.shortest_edge``/``size.longest_edge``. The keyword arguments override
        both: the official model passes the checkpoint config's ``min_pixels`` /
        ``max_pixels`` to the processor, and those win over the directory's values.
        """
        path = Path(processor_dir) / "preprocessor_config.json"
        if not path.is_file():
            raise CheckpointError(f"no preprocessor_config.json in {processor_dir}")
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read {path}: {exc}") from exc
        size = raw.get("size") or {}
        defaults = cls()
        file_min = raw.get("min_pixels", size.get("shortest_edge", defaults.min_pixels))
        file_max = raw.get("max_pixels", size.get("longest_edge", defaults.max_pixels))
        return cls(
            patch_size=int(raw.get("patch_size", defaults.patch_size)),
            merge_size=int(raw.get("merge_size", defaults.merge_size)),
            temporal_patch_size=int(raw.get("temporal_patch_size",
                                            defaults.temporal_patch_size)),
            image_mean=tuple(float(v) for v in raw.get("image_mean", defaults.image_mean)),
            image_std=tuple(float(v) for v in raw.get("image_std", defaults.image_std)),
            min_pixels=int(min_pixels if min_pixels is not None else file_min),
            max_pixels=int(max_pixels if max_pixels is not None else file_max),
            rescale_factor=float(raw.get("rescale_factor", defaults.rescale_factor)),
        )


# --------------------------------------------------------------------------------------
# uint8 antialiased bicubic resize, bit-exact with torch's CPU kernel
# --------------------------------------------------------------------------------------

def _aa_cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic kernel with a = -0.5 (the antialias filter of torch and PIL)."""
    a = -0.5
    x = np.abs(x)
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


@functools.lru_cache(maxsize=64)
def _fixed_point_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, int]:
    """Source indices (out, K), int weights (out, K) and precision [bits] for one axis.

    Follows torch's uint8 antialias path (``_compute_index_ranges_int16_weights``): float64
    weights of the stretched cubic, normalised per output sample, then scaled to integers
    at the largest precision whose largest weight still fits int16. Taps past the valid
    range get weight 0 and a clamped index.
    """
    scale = in_size / out_size
    support = 2.0 * scale if scale >= 1.0 else 2.0
    taps = int(math.ceil(support)) * 2 + 1
    invscale = 1.0 / scale if scale >= 1.0 else 1.0
    index = np.zeros((out_size, taps), dtype=np.int64)
    weight = np.zeros((out_size, taps), dtype=np.float64)
    wt_max = 0.0
    for i in range(out_size):
        center = scale * (i + 0.5)
        # int() truncates toward zero like the C++ casts.
        xmin = max(int(center - support + 0.5), 0)
        xsize = min(max(min(int(center + support + 0.5), in_size) - xmin, 0), taps)
        w = _aa_cubic((np.arange(xsize) + xmin - center + 0.5) * invscale)
        total = 0.0
        for v in w:  # sequential sum, as the kernel accumulates
            total += v
        if total != 0.0:
            w = w / total
            wt_max = max(wt_max, float(w.max()))
        weight[i, :xsize] = w
        index[i, :] = np.minimum(xmin + np.arange(taps), in_size - 1)
    precision = 0
    while precision < 22 and int(0.5 + wt_max * (1 << (precision + 1))) < (1 << 15):
        precision += 1
    scaled = weight * (1 << precision)
    int_weight = np.where(scaled < 0, np.trunc(-0.5 + scaled), np.trunc(0.5 + scaled))
    return index, int_weight.astype(np.int64), precision


def _resample_axis_uint8(image: torch.Tensor, out_size: int, dim: int) -> torch.Tensor:
    """One separable pass along ``dim`` of a uint8 tensor, integer arithmetic throughout."""
    in_size = image.shape[dim]
    if in_size == out_size:
        return image  # torch skips the pass too
    index, weight, precision = _fixed_point_taps(in_size, out_size)
    device = image.device
    index_t = torch.from_numpy(index).to(device)
    weight_shape = [1] * image.ndim
    weight_shape[dim] = out_size
    weight_t = torch.from_numpy(weight).to(device=device, dtype=torch.int32)
    out_shape = list(image.shape)
    out_shape[dim] = out_size
    acc = torch.full(out_shape, 1 << (precision - 1), dtype=torch.int32, device=device)
    # K gathers of the output size each: a banded matrix product in exact int32. The sums
    # stay far below 2^31: 255 * sum|w| is about 255 * 2^14 * 1.2 * max(1, in/out).
    for k in range(index.shape[1]):
        taps = image.index_select(dim, index_t[:, k]).to(torch.int32)
        acc += taps * weight_t[:, k].view(weight_shape)
    return torch.clamp(acc >> precision, 0, 255).to(torch.uint8)  # >> floors like C++


def resize_bicubic_uint8(images: torch.Tensor, height: int, width: int, *,
                         use_native: Optional[bool] = None) -> torch.Tensor:
    """Antialiased bicubic resize of (N, C, H, W) uint8 images to (N, C, height, width).

    On the CPU this is ``F.interpolate`` (torch's native fixed-point uint8 kernel, which is
    what torchvision and hence the official fast processor use there). Elsewhere, or with
    ``use_native=False``, an integer re-implementation of that kernel runs on the tensor's
    device: width pass first, round/clamp to uint8, then height pass; equal bit for bit.
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ModelInputError(f"resize needs (N, C, H, W) uint8, have {tuple(images.shape)} "
                              f"{images.dtype}")
    if use_native is None:
        use_native = images.device.type == "cpu"
    if use_native:
        # The kernel is about 3x faster on channels-last (HWC) memory; the result is the same.
        images = images.contiguous(memory_format=torch.channels_last)
        return F.interpolate(images, size=(height, width), mode="bicubic", align_corners=False,
                             antialias=True)
    out = _resample_axis_uint8(images, width, dim=3)
    return _resample_axis_uint8(out, height, dim=2)


def normalize_and_patchify(images: torch.Tensor, config: ImageProcessorConfig,
                           out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N*grid_h*grid_w, C*T*P*P) float32 normalised patches.

    Rows are ordered image by image, then merge window by merge window (row-major over the
    (grid_h/merge, grid_w/merge) windows, row-major inside each window); each row is
    channel-major, then time (the still image repeated T times), then patch row, then patch
    column. ``out``: an optional float32 tensor of that shape on the images' device to write
    into (saves allocating ~70 MB per 16-frame call).
    """
    n, c, h, w = images.shape
    p, m, t = config.patch_size, config.merge_size, config.temporal_patch_size
    if h % (p * m) or w % (p * m):
        raise ModelInputError(f"resized image must be a multiple of {p * m} px, have {h}x{w}")
    gh, gw = h // p, w // p
    shape = (n * gh * gw, c * t * p * p)
    if out is None:
        out = torch.empty(shape, dtype=torch.float32, device=images.device)
    elif (tuple(out.shape) != shape or out.dtype != torch.float32
          or out.device != images.device or not out.is_contiguous()):
        raise ModelInputError(f"out must be a contiguous float32 {shape} tensor on "
                              f"{images.device}, have {out.dtype} {tuple(out.shape)} on "
                              f"{out.device}")
    # The patch order: merge blocks row-major, the m x m patches of a block, then channels,
    # time and the p x p pixels of a patch (both are views: no copy before the one below).
    axes = dict(m1=m, m2=m, p1=p, p2=p)
    patches = rearrange(images, "n c (bh m1 p1) (bw m2 p2) -> n bh bw m1 m2 c p1 p2", **axes)
    blocks = rearrange(out, "(n bh bw m1 m2) (c t p1 p2) -> n bh bw m1 m2 c t p1 p2",
                       n=n, bh=gh // m, c=c, t=t, **axes)
    first = blocks[:, :, :, :, :, :, 0]
    first.copy_(patches)  # uint8 -> float32 and reorder in one pass
    # transformers fuses rescale and normalise into one subtraction and one division; done
    # in place here because fresh 35-70 MB tensors cost more (page faults) than the math.
    mean = torch.tensor([v / config.rescale_factor for v in config.image_mean],
                        dtype=torch.float32, device=images.device).view(c, 1, 1)
    std = torch.tensor([v / config.rescale_factor for v in config.image_std],
                       dtype=torch.float32, device=images.device).view(c, 1, 1)
    first.sub_(mean).div_(std)
    for k in range(1, t):
        blocks[:, :, :, :, :, :, k].copy_(first)
    return out


def pixel_values_shape(num_frames: int, height: int, width: int,
                       config: ImageProcessorConfig = ImageProcessorConfig()) -> tuple[int, int]:
    """Shape of the pixel_values that preprocess_frames gives for N frames of HxW."""
    out_h, out_w = _target_size((height, width), config)
    p = config.patch_size
    return (num_frames * (out_h // p) * (out_w // p),
            3 * config.temporal_patch_size * p * p)


def image_grid_thw(num_frames: int, height: int, width: int,
                   config: ImageProcessorConfig = ImageProcessorConfig(),
                   device: Union[str, torch.device, None] = None) -> torch.Tensor:
    """The (num_frames, 3) int64 image_grid_thw that preprocess_frames gives for N HxW frames."""
    out_h, out_w = _target_size((height, width), config)
    return torch.tensor([[1, out_h // config.patch_size, out_w // config.patch_size]],
                        dtype=torch.int64, device=device).repeat(num_frames, 1)


def _as_uint8_nchw(frames, layout: str, device) -> torch.Tensor:
    """Validate the frame container and return an (N, 3, H, W) uint8 tensor on ``device``."""
    if isinstance(frames, np.ndarray):
        if frames.dtype != np.uint8:
            raise ModelInputError(f"frames must be uint8 RGB, have dtype {frames.dtype}")
        tensor = torch.from_numpy(np.ascontiguousarray(frames))
    elif isinstance(frames, torch.Tensor):
        if frames.dtype != torch.uint8:
            raise ModelInputError(f"frames must be uint8 RGB, have dtype {frames.dtype}")
        tensor = frames
    else:
        raise ModelInputError(f"frames must be a numpy array or torch tensor, have "
                              f"{type(frames).__name__}")
    if tensor.ndim == 5:  # (cameras, frames per camera, ...) camera-major
        tensor = tensor.flatten(0, 1)
    if tensor.ndim != 4:
        raise ModelInputError(f"frames must be (N,H,W,3), (N,3,H,W) or (4,4,...), have "
                              f"shape {tuple(tensor.shape)}")
    if layout == "auto":
        chw, hwc = tensor.shape[1] == 3, tensor.shape[-1] == 3
        if chw == hwc:
            raise ModelInputError(
                f"cannot tell HWC from CHW for frame shape {tuple(tensor.shape)}: need exactly "
                f"one of dim 1 / dim -1 equal to 3; pass layout='hwc' or 'chw'")
        layout = "chw" if chw else "hwc"
    if layout == "hwc":
        if tensor.shape[-1] != 3:
            raise ModelInputError(f"layout 'hwc' needs 3 channels last, have shape "
                                  f"{tuple(tensor.shape)}")
        tensor = tensor.permute(0, 3, 1, 2)
    elif layout == "chw":
        if tensor.shape[1] != 3:
            raise ModelInputError(f"layout 'chw' needs 3 channels at dim 1, have shape "
                                  f"{tuple(tensor.shape)}")
    else:
        raise ModelInputError(f"layout must be 'auto', 'hwc' or 'chw', have {layout!r}")
    if tensor.shape[0] == 0:
        raise ModelInputError("frames must hold at least one image, have 0")
    if device is not None:
        tensor = tensor.to(device)
    return tensor


def _target_size(hw, config: ImageProcessorConfig) -> tuple[int, int]:
    return smart_resize(int(hw[0]), int(hw[1]), factor=config.resize_factor,
                        min_pixels=config.min_pixels, max_pixels=config.max_pixels)


def _resize_frame_list(frames, config: ImageProcessorConfig, layout: str, device
                       ) -> torch.Tensor:
    """A list of single frames -> (N, 3, h, w) uint8 resized images.

    Each frame is resized on its own, straight from the caller's buffer (e.g. the planner's
    decode cache), so the full-resolution frames are never copied into one big batch
    (about 100 MB for 16 frames of 1080x1920). The kernel treats images independently, so
    the result equals the batched path bit for bit.
    """
    if len(frames) == 0:
        raise ModelInputError("frames must hold at least one image, have 0")
    resized = []
    for frame in frames:
        with warnings.catch_warnings():
            # Cached frames are read-only numpy arrays; they are only read here.
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            image = _as_uint8_nchw(frame[None], layout, device)
        target = _target_size(image.shape[-2:], config)
        if resized and target != tuple(resized[0].shape[-2:]):
            raise ModelInputError(
                f"all frames must resize to one size, have {tuple(resized[0].shape[-2:])} and "
                f"{target} (frame sizes differ)")
        if target != tuple(image.shape[-2:]):
            image = resize_bicubic_uint8(image, *target)
        resized.append(image)
    return torch.cat(resized)


def preprocess_frames(frames, config: ImageProcessorConfig = ImageProcessorConfig(), *,
                      layout: str = "auto",
                      device: Union[str, torch.device, None] = None,
                      out: Optional[torch.Tensor] = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera frames -> (pixel_values, image_grid_thw) for the Qwen3-VL vision encoder.

    frames: uint8 RGB, torch tensor or numpy array, (N, H, W, 3) ("hwc"), (N, 3, H, W)
        ("chw"), or (4, 4, ...) flattened camera-major to N = 16. "auto" decides only when
        exactly one of dim 1 / dim -1 equals 3. A list or tuple of single frames ((H, W, 3) or
        (3, H, W)) is resized frame by frame without first copying them into one batch.
    device: where the work runs and the results live (default: the frames' device; CPU for
        numpy). The output is the same on every device.
    out: optional preallocated float32 pixel_values tensor to fill (a runtime that runs
        every cycle can keep one and skip a large allocation each time).
    Returns pixel_values float32 (N*grid_h*grid_w, 3*T*P*P) and image_grid_thw int64 (N, 3)
    holding (1, resized_h / P, resized_w / P) per image.
    """
    if isinstance(frames, (list, tuple)):
        images = _resize_frame_list(frames, config, layout, device)
        out_h, out_w = images.shape[-2:]
    else:
        images = _as_uint8_nchw(frames, layout, device)
        out_h, out_w = _target_size(images.shape[-2:], config)
        if (out_h, out_w) != tuple(images.shape[-2:]):
            images = resize_bicubic_uint8(images, out_h, out_w)
    n = images.shape[0]
    pixel_values = normalize_and_patchify(images, config, out=out)
    grid = torch.tensor([[1, out_h // config.patch_size, out_w // config.patch_size]],
                        dtype=torch.int64, device=images.device).repeat(n, 1)
    return pixel_values, grid
