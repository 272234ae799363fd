"""validate_model_input: shapes, dtypes, layouts and the t0-frame history rules (no torch)."""
import re

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from alpamayo_ros.core.errors import ModelInputError
from alpamayo_ros.core.model_input import validate_model_input
from alpamayo_ros.core.types import NUM_FRAMES, NUM_HISTORY, ModelInput


def _history(yaw_rate=0.05, speed=5.0):
    """Planar history ending at the origin with the identity rotation (t0 frame)."""
    t = np.linspace(-1.5, 0.0, NUM_HISTORY)
    yaw = yaw_rate * t
    xyz = np.stack([speed * t, 0.5 * speed * yaw_rate * t ** 2, np.zeros_like(t)], axis=1)
    rot = Rotation.from_euler("z", yaw[:, None]).as_matrix()
    return xyz, rot


def _frames(shape=(NUM_FRAMES, 48, 64, 3)):
    return np.arange(np.prod(shape), dtype=np.int64).reshape(shape).astype(np.uint8)


def _input(**overrides):
    xyz, rot = _history()
    values = dict(frames=_frames(), history_xyz=xyz, history_rot=rot)
    values.update(overrides)
    return ModelInput(**values)


def test_valid_input_passes_and_is_normalised():
    src = _input()
    out = validate_model_input(src)
    assert out.frames.shape == (NUM_FRAMES, 48, 64, 3)
    assert out.frames.flags.c_contiguous
    assert out.history_xyz.dtype == np.float64 and out.history_rot.dtype == np.float64
    np.testing.assert_array_equal(out.frames, src.frames)


def test_camera_frame_array_is_flattened_camera_major():
    frames = _frames((4, 4, 40, 40, 3))
    out = validate_model_input(_input(frames=frames))
    assert out.frames.shape == (16, 40, 40, 3)
    # camera 1, frame 2 lands at index 1 * 4 + 2
    np.testing.assert_array_equal(out.frames[6], frames[1, 2])


def test_list_of_frames_is_kept_without_copy_and_mixed_shapes_are_refused():
    frames = list(_frames())
    out = validate_model_input(_input(frames=frames)).frames
    assert isinstance(out, tuple) and len(out) == 16
    # the very same buffers (no full-resolution copy on the planner's hot path)
    assert all(a is b for a, b in zip(out, frames))
    with pytest.raises(ModelInputError, match="need 4 frames per camera .* have 15 frames"):
        validate_model_input(_input(frames=frames[:15]))
    with pytest.raises(ModelInputError, match="uint8"):
        validate_model_input(_input(frames=[f.astype(np.float32) for f in frames]))
    with pytest.raises(ModelInputError, match="channels-first"):
        validate_model_input(_input(frames=[np.zeros((3, 48, 64), np.uint8)] * 16))
    frames[3] = np.zeros((40, 64, 3), np.uint8)
    with pytest.raises(ModelInputError, match="share one shape, have 2 shapes"):
        validate_model_input(_input(frames=frames))


@pytest.mark.parametrize("count", [15, 17, 0, 32])
def test_wrong_frame_count(count):
    with pytest.raises(ModelInputError,
                       match=f"need 4 frames per camera for 1 to 7 cameras, have {count}"):
        validate_model_input(_input(frames=_frames((count, 48, 64, 3))))


@pytest.mark.parametrize("cameras", [1, 2, 7])
def test_any_camera_count_from_1_to_7(cameras):
    """4 frames per camera for any rig; camera ids, when given, name one camera per 4."""
    out = validate_model_input(_input(frames=_frames((cameras, 4, 40, 40, 3))))
    assert out.frames.shape == (4 * cameras, 40, 40, 3)
    ids = tuple(range(cameras))
    named = ModelInput(out.frames, out.history_xyz, out.history_rot, camera_indices=ids,
                       navigation_text="Turn left in 40m")
    checked = validate_model_input(named)
    assert checked.camera_indices == ids and checked.navigation_text == "Turn left in 40m"
    with pytest.raises(ModelInputError, match=f"camera_indices name {cameras + 1} cameras"):
        validate_model_input(ModelInput(out.frames, out.history_xyz, out.history_rot,
                                        camera_indices=ids + (6,)))
    with pytest.raises(ModelInputError, match="navigation_text must be a str"):
        validate_model_input(ModelInput(out.frames, out.history_xyz, out.history_rot,
                                        navigation_text=b"Turn left"))


def test_wrong_camera_grid():
    with pytest.raises(ModelInputError, match=r"\(cameras, 4, H, W, 3\).*\(2, 8, 40, 40, 3\)"):
        validate_model_input(_input(frames=_frames((2, 8, 40, 40, 3))))


def test_channels_first_is_refused_with_hint():
    with pytest.raises(ModelInputError, match="channels-first"):
        validate_model_input(_input(frames=_frames((NUM_FRAMES, 3, 48, 64))))


def test_wrong_dtype():
    with pytest.raises(ModelInputError, match="uint8 RGB, have dtype float32"):
        validate_model_input(_input(frames=_frames().astype(np.float32)))


def test_too_small_frames():
    with pytest.raises(ModelInputError, match="at least 32x32 px, have 16x64"):
        validate_model_input(_input(frames=_frames((NUM_FRAMES, 16, 64, 3))))


def test_history_shapes():
    xyz, rot = _history()
    with pytest.raises(ModelInputError, match=r"history_xyz must be \(16, 3\), have \(15, 3\)"):
        validate_model_input(_input(history_xyz=xyz[1:]))
    with pytest.raises(ModelInputError, match=r"history_rot must be \(16, 3, 3\)"):
        validate_model_input(_input(history_rot=rot[:, :2]))


def test_non_finite_history():
    xyz, _ = _history()
    xyz = xyz.copy()
    xyz[4, 1] = np.nan
    need = r"history_xyz has 1 non-finite values \(first at index \(4, 1\)\)"
    with pytest.raises(ModelInputError, match=need):
        validate_model_input(_input(history_xyz=xyz))


def test_last_pose_must_be_origin():
    xyz, _ = _history()
    xyz = xyz + np.array([0.3, 0.0, 0.0])
    with pytest.raises(ModelInputError) as info:
        validate_model_input(_input(history_xyz=xyz))
    message = str(info.value)
    assert "history_xyz[-1]" in message and "0.3 m from it" in message
    assert re.search(r"need <= 0\.001 m", message)


def test_last_rotation_must_be_identity():
    _, rot = _history()
    rot = Rotation.from_euler("z", 0.2).as_matrix() @ rot
    with pytest.raises(ModelInputError, match=r"history_rot\[-1\] \(t0\) must be the identity"):
        validate_model_input(_input(history_rot=rot))


def test_rotations_must_be_orthonormal():
    _, rot = _history()
    rot = rot.copy()
    rot[2] *= 1.1
    with pytest.raises(ModelInputError, match=r"history_rot\[2\] is not a rotation"):
        validate_model_input(_input(history_rot=rot))


def test_small_rounding_at_t0_is_accepted():
    xyz, rot = _history()
    xyz = xyz.astype(np.float32)  # float32 history as the official loader produces it
    xyz[-1] = 1e-7
    assert validate_model_input(_input(history_xyz=xyz)).history_xyz[-1, 0] == pytest.approx(1e-7)
