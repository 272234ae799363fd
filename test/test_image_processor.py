"""Tests of alpamayo_ros.model.image_processor (Qwen3-VL image preprocessing in torch)."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch

import fixture_set
from alpamayo_ros.core.errors import CheckpointError, ModelInputError
from alpamayo_ros.model.image_processor import (
    ImageProcessorConfig,
    normalize_and_patchify,
    preprocess_frames,
    resize_bicubic_uint8,
    smart_resize,
)

torch.set_num_threads(1)


def _random_frames(n, h, w, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


# ----------------------------------------------------------------------------- smart_resize

def test_smart_resize_release_camera_size():
    assert smart_resize(1080, 1920) == (320, 576)


def test_smart_resize_keeps_bounds_and_factor_over_many_sizes():
    for h, w in [(180, 320), (720, 1280), (1080, 1920), (1208, 1920), (480, 640), (999, 333),
                 (64, 64), (4000, 3000)]:
        out_h, out_w = smart_resize(h, w)
        assert out_h % 32 == 0 and out_w % 32 == 0, (h, w, out_h, out_w)
        assert 163840 <= out_h * out_w <= 196608, (h, w, out_h, out_w)


def test_smart_resize_rejects_extreme_aspect_ratio():
    with pytest.raises(ModelInputError, match="aspect ratio"):
        smart_resize(10, 2100)


# ------------------------------------------------------------------------ input handling

def test_1080p_frames_give_grid_1_20_36():
    frames = _random_frames(2, 1080, 1920)
    pixel_values, grid = preprocess_frames(frames)
    assert grid.dtype == torch.int64
    assert grid.tolist() == [[1, 20, 36], [1, 20, 36]]
    assert pixel_values.dtype == torch.float32
    assert tuple(pixel_values.shape) == (2 * 20 * 36, 3 * 2 * 16 * 16)


def test_hwc_chw_numpy_torch_and_camera_major_inputs_agree():
    frames = _random_frames(4, 90, 160, seed=1)
    ref, grid = preprocess_frames(frames)
    chw = torch.from_numpy(frames).permute(0, 3, 1, 2).contiguous()
    for other in (torch.from_numpy(frames), chw):
        values, other_grid = preprocess_frames(other)
        assert torch.equal(values, ref)
        assert torch.equal(other_grid, grid)
    stacked, _ = preprocess_frames(frames.reshape(2, 2, 90, 160, 3))
    assert torch.equal(stacked, ref)


def test_wrong_dtype_is_refused():
    with pytest.raises(ModelInputError, match="uint8"):
        preprocess_frames(np.zeros((1, 64, 64, 3), dtype=np.float32))
    with pytest.raises(ModelInputError, match="uint8"):
        preprocess_frames(torch.zeros((1, 3, 64, 64), dtype=torch.float32))


def test_ambiguous_layout_is_refused_unless_named():
    frames = np.zeros((2, 3, 40, 3), dtype=np.uint8)  # dim 1 and dim -1 are both 3
    with pytest.raises(ModelInputError, match="HWC from CHW"):
        preprocess_frames(frames)
    _, grid_hwc = preprocess_frames(frames, layout="hwc")   # 3 x 40 image
    _, grid_chw = preprocess_frames(frames, layout="chw")   # 40 x 3 image
    assert grid_hwc[0, 1] < grid_hwc[0, 2] and grid_chw[0, 1] > grid_chw[0, 2]


def test_wrong_shapes_and_layouts_are_refused():
    with pytest.raises(ModelInputError, match="have shape"):
        preprocess_frames(np.zeros((64, 64, 3), dtype=np.uint8))
    with pytest.raises(ModelInputError, match="exactly one"):
        preprocess_frames(np.zeros((2, 4, 64, 5), dtype=np.uint8))
    with pytest.raises(ModelInputError, match="layout"):
        preprocess_frames(np.zeros((2, 64, 64, 3), dtype=np.uint8), layout="nhwc")


# ---------------------------------------------------------------------------- patch layout

def test_patch_rows_follow_merge_windows_and_duplicate_time():
    config = ImageProcessorConfig(min_pixels=64 * 96, max_pixels=64 * 96)
    # A 64x96 image needs no resize; encode each 16x16 patch's (row, col) in its pixels.
    image = np.zeros((64, 96, 3), dtype=np.uint8)
    for r in range(4):
        for c in range(6):
            image[16 * r:16 * (r + 1), 16 * c:16 * (c + 1)] = (r * 40, c * 40, 7)
    values, grid = preprocess_frames(image[None], config)
    assert grid.tolist() == [[1, 4, 6]]
    patches = values.view(24, 3, 2, 16, 16)
    assert torch.equal(patches[:, :, 0], patches[:, :, 1])  # still image repeated in time
    decoded = ((patches[:, :, 0, 0, 0] * 127.5) + 127.5).round().long()
    order = [(int(row) // 40, int(col) // 40) for row, col, _ in decoded.tolist()]
    # merge windows of 2x2 patches, row-major over windows, row-major inside a window
    expected = [(2 * wr + i, 2 * wc + j) for wr in range(2) for wc in range(3)
                for i in range(2) for j in range(2)]
    assert order == expected


def test_normalisation_maps_0_and_255_to_minus_one_and_one():
    image = torch.zeros((1, 3, 32, 32), dtype=torch.uint8)
    image[..., 16:] = 255
    values = normalize_and_patchify(image, ImageProcessorConfig())
    assert values.min().item() == -1.0 and values.max().item() == 1.0


def test_out_buffer_is_filled_and_checked():
    frames = _random_frames(2, 90, 160, seed=4)
    ref, _ = preprocess_frames(frames)
    buffer = torch.full_like(ref, float("nan"))
    values, _ = preprocess_frames(frames, out=buffer)
    assert values.data_ptr() == buffer.data_ptr()
    assert torch.equal(buffer, ref)
    with pytest.raises(ModelInputError, match="out must be"):
        preprocess_frames(frames, out=torch.empty(ref.shape[0] - 1, ref.shape[1]))


# ------------------------------------------------------------------ resize implementations

@pytest.mark.parametrize("size_in,size_out", [
    ((1080, 1920), (320, 576)),   # release camera
    ((180, 320), (320, 544)),     # fixture frames (upscale)
    ((37, 41), (64, 32)),         # odd sizes, mixed up/down
    ((200, 300), (200, 96)),      # one axis unchanged
])
def test_integer_resize_equals_torch_native_uint8_kernel(size_in, size_out):
    images = torch.from_numpy(_random_frames(2, *size_in, seed=3)).permute(0, 3, 1, 2)
    native = resize_bicubic_uint8(images, *size_out, use_native=True)
    emulated = resize_bicubic_uint8(images, *size_out, use_native=False)
    assert torch.equal(native, emulated)


# ------------------------------------------------------------------------- golden fixture

def _fixture_frames():
    return fixture_set.load_inputs()["image_frames"]


def _fixture_config() -> ImageProcessorConfig:
    """The set's processor config with its checkpoint's pixel bounds, as the official model
    (and AlpamayoRuntime) builds it."""
    cfg = fixture_set.checkpoint_config()
    return ImageProcessorConfig.from_dir(fixture_set.base_vlm_dir(),
                                         min_pixels=cfg.get("min_pixels"),
                                         max_pixels=cfg.get("max_pixels"))


@fixture_set.requires_fixtures
def test_fixture_pixel_values_are_bit_exact():
    expected_json = fixture_set.load_expected()
    expected_grid = fixture_set.load_expected_tensors()["image_grid_thw"]
    values, grid = preprocess_frames(_fixture_frames(), _fixture_config())
    assert torch.equal(grid, expected_grid)
    assert list(values.shape) == expected_json["pixel_values_shape"]
    assert np.array_equal(values.numpy(), fixture_set.pixel_values())
    digest = hashlib.sha256(values.numpy().astype("<f4").tobytes()).hexdigest()
    assert digest == expected_json["pixel_values_sha256_float32_le"]


@fixture_set.requires_fixtures
def test_fixture_pixel_values_from_a_list_of_read_only_frames():
    """The planner passes its cached (read-only) frames as a list: same bits, no batch copy."""
    config = _fixture_config()
    frames = [np.ascontiguousarray(f.permute(1, 2, 0).numpy())
              for f in _fixture_frames().flatten(0, 1)]
    for frame in frames:
        frame.flags.writeable = False
    values, grid = preprocess_frames(frames, config, layout="hwc")
    assert np.array_equal(values.numpy(), fixture_set.pixel_values())
    assert torch.equal(grid, fixture_set.load_expected_tensors()["image_grid_thw"])


def test_list_input_refuses_frames_of_different_sizes():
    # 480x480 and 1080x1920 resize to different grids (a 720x1280 frame would not)
    frames = [np.zeros((480, 480, 3), np.uint8), np.zeros((1080, 1920, 3), np.uint8)]
    with pytest.raises(ModelInputError, match="resize to one size"):
        preprocess_frames(frames, layout="hwc")


@fixture_set.requires_fixtures
def test_fixture_pixel_values_from_hwc_numpy_and_integer_resize_path():
    config = _fixture_config()
    frames = _fixture_frames().flatten(0, 1)
    grid_h, grid_w = fixture_set.load_expected_tensors()["image_grid_thw"][0, 1:].tolist()
    hwc = frames.permute(0, 2, 3, 1).contiguous().numpy()
    values, _ = preprocess_frames(hwc, config)
    assert np.array_equal(values.numpy(), fixture_set.pixel_values())
    resized = resize_bicubic_uint8(frames, config.patch_size * grid_h,
                                   config.patch_size * grid_w, use_native=False)
    assert np.array_equal(normalize_and_patchify(resized, config).numpy(),
                          fixture_set.pixel_values())


@fixture_set.requires_fixtures
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_fixture_pixel_values_on_cuda():
    values, grid = preprocess_frames(_fixture_frames(), _fixture_config(), device="cuda")
    assert values.device.type == "cuda" and grid.device.type == "cuda"
    assert np.array_equal(values.cpu().numpy(), fixture_set.pixel_values())


# ------------------------------------------------------------------------------ config

@fixture_set.requires_fixtures
def test_config_from_fixture_dir_reads_size_keys_and_overrides():
    raw = json.loads((fixture_set.base_vlm_dir() / "preprocessor_config.json").read_text())
    config = ImageProcessorConfig.from_dir(fixture_set.base_vlm_dir())
    # transformers writes the bounds as size.shortest_edge / longest_edge, older files as
    # min_pixels / max_pixels; the set has one of the two.
    size = raw.get("size") or {}
    assert config.min_pixels == raw.get("min_pixels", size.get("shortest_edge"))
    assert config.max_pixels == raw.get("max_pixels", size.get("longest_edge"))
    assert config.patch_size == raw["patch_size"] and config.merge_size == raw["merge_size"]
    overridden = ImageProcessorConfig.from_dir(fixture_set.base_vlm_dir(), min_pixels=1024,
                                               max_pixels=2048)
    assert (overridden.min_pixels, overridden.max_pixels) == (1024, 2048)


def test_config_from_dir_min_max_pixel_keys_and_errors(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(
        {"patch_size": 14, "merge_size": 2, "min_pixels": 1000, "max_pixels": 5000}))
    config = ImageProcessorConfig.from_dir(tmp_path)
    assert (config.patch_size, config.min_pixels, config.max_pixels) == (14, 1000, 5000)
    assert config.resize_factor == 28
    with pytest.raises(CheckpointError, match="preprocessor_config.json"):
        ImageProcessorConfig.from_dir(tmp_path / "missing")
    with pytest.raises(CheckpointError, match="min_pixels"):
        ImageProcessorConfig(min_pixels=10, max_pixels=5)
