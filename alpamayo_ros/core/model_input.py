"""Checks and normalises a ModelInput before it reaches the network (numpy only).

Rules (each violation raises ModelInputError with have/need numbers):

* frames: uint8 RGB, channels last, either (4 C, H, W, 3) camera-major for C = 1..7
  cameras (cam0 f0..f3, cam1 f0..f3, ...; C = 4 for the R1 rig) or (C, 4, H, W, 3)
  [camera, frame] which is flattened to that order. A list of 4 C (or C x 4) HxWx3 arrays
  is kept as a flat tuple of frames, not stacked. All frames must share one (H, W): a rig
  with mixed resolutions has to resize before (the image processor would otherwise give
  each camera another token grid). H and W must be
  at least 32 px (one merged vision patch). Channels-first (CHW) input is refused, not
  guessed.
  The order inside the array cannot be checked from pixels; the planner core builds it.
* camera_indices (optional): one camera id per 4 frames; navigation_text: a str or None.
* history_xyz (16, 3) and history_rot (16, 3, 3): finite; every rotation orthonormal with
  det +1 (tolerance 1e-3); the last pose (t0) at the origin (|xyz| <= 1e-3 m) with the
  identity rotation (max |R - I| <= 1e-3), since the history is given in the t0 frame.
"""
from __future__ import annotations

import numpy as np

from alpamayo_ros.core.errors import ModelInputError
from alpamayo_ros.core.types import FRAMES_PER_CAMERA, MAX_CAMERAS, NUM_HISTORY, ModelInput

MIN_FRAME_SIDE = 32
T0_POSITION_TOLERANCE = 1e-3  # m
ROTATION_TOLERANCE = 1e-3


def _check_frame_count(count: int) -> None:
    if count % FRAMES_PER_CAMERA or not 1 <= count // FRAMES_PER_CAMERA <= MAX_CAMERAS:
        raise ModelInputError(f"need {FRAMES_PER_CAMERA} frames per camera for 1 to "
                              f"{MAX_CAMERAS} cameras, have {count} frames")


def _normalize_frame_list(frames) -> tuple:
    """A list of 4 C (or C x 4) HxWx3 frames, checked one by one and kept as a tuple.

    The planner hands its cached frames over as a list so that 16 full-resolution frames
    are not copied into one array only to be resized; the image processor reads each one.
    """
    flat = [f for group in frames for f in (group if isinstance(group, (list, tuple))
                                             else [group])]
    _check_frame_count(len(flat))
    shapes = sorted({tuple(np.shape(f)) for f in flat})
    if len(shapes) > 1:
        raise ModelInputError(
            f"all frames must share one shape, have {len(shapes)} shapes {shapes[:4]}; "
            "resize the cameras to one resolution first")
    for index, frame in enumerate(flat):
        if not isinstance(frame, np.ndarray):
            raise ModelInputError(f"frame {index} must be a numpy array, have "
                                  f"{type(frame).__name__}")
    if any(f.dtype != np.uint8 for f in flat):
        raise ModelInputError("frames must be uint8 RGB, have "
                              f"{sorted({str(f.dtype) for f in flat})}")
    if flat[0].ndim != 3:
        raise ModelInputError(f"each listed frame must be (H, W, 3), have shape {flat[0].shape}")
    _check_frame_layout(flat[0][None])
    return tuple(flat)


def normalize_frames(frames):
    """Frames as a C-contiguous (4 C, H, W, 3) uint8 array, or, when given as a list, a
    tuple of 4 C (H, W, 3) uint8 arrays (see the module rules)."""
    if isinstance(frames, (list, tuple)):
        return _normalize_frame_list(frames)
    if not isinstance(frames, np.ndarray):
        raise ModelInputError(f"frames must be a numpy array, have {type(frames).__name__}")
    if frames.dtype != np.uint8:
        raise ModelInputError(f"frames must be uint8 RGB, have dtype {frames.dtype}")
    if frames.ndim == 5:
        if frames.shape[1] != FRAMES_PER_CAMERA:
            raise ModelInputError(
                f"5-D frames must be (cameras, {FRAMES_PER_CAMERA}, H, W, 3) "
                f"[camera, frame], have shape {frames.shape}")
        frames = frames.reshape((-1,) + frames.shape[2:])
    if frames.ndim != 4:
        raise ModelInputError(f"frames must be (4 x cameras, H, W, 3) or "
                              f"(cameras, {FRAMES_PER_CAMERA}, H, W, 3), have shape "
                              f"{frames.shape}")
    _check_frame_count(frames.shape[0])
    _check_frame_layout(frames)
    return np.ascontiguousarray(frames)


def _check_frame_layout(frames: np.ndarray) -> None:
    """(N, H, W, 3) channels last and at least MIN_FRAME_SIDE pixels a side."""
    if frames.shape[-1] != 3:
        hint = " (channels-first? pass H, W, 3)" if frames.shape[1] == 3 else ""
        raise ModelInputError(f"frames must have 3 RGB channels last, have shape "
                              f"{frames.shape}{hint}")
    height, width = frames.shape[1:3]
    if min(height, width) < MIN_FRAME_SIDE:
        raise ModelInputError(f"frames must be at least {MIN_FRAME_SIDE}x{MIN_FRAME_SIDE} px, "
                              f"have {height}x{width}")


def _finite(name: str, array: np.ndarray) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        index = np.argwhere(bad)[0]
        raise ModelInputError(f"{name} has {int(bad.sum())} non-finite values "
                              f"(first at index {tuple(int(i) for i in index)})")


def normalize_history(history_xyz, history_rot) -> tuple[np.ndarray, np.ndarray]:
    """History as float64 (16, 3) positions and (16, 3, 3) rotations in the t0 frame."""
    xyz = np.asarray(history_xyz, dtype=np.float64)
    rot = np.asarray(history_rot, dtype=np.float64)
    if xyz.shape != (NUM_HISTORY, 3):
        raise ModelInputError(f"history_xyz must be ({NUM_HISTORY}, 3), have {xyz.shape}")
    if rot.shape != (NUM_HISTORY, 3, 3):
        raise ModelInputError(f"history_rot must be ({NUM_HISTORY}, 3, 3), have {rot.shape}")
    _finite("history_xyz", xyz)
    _finite("history_rot", rot)
    orth_err = np.abs(rot @ np.swapaxes(rot, 1, 2) - np.eye(3)).max(axis=(1, 2))
    det = np.linalg.det(rot)
    bad = np.flatnonzero((orth_err > ROTATION_TOLERANCE) | (np.abs(det - 1.0) > ROTATION_TOLERANCE))
    if bad.size:
        k = int(bad[0])
        raise ModelInputError(
            f"history_rot[{k}] is not a rotation: |R R^T - I| = {orth_err[k]:.3g}, det = "
            f"{det[k]:.4f} (need <= {ROTATION_TOLERANCE} and 1)")
    t0_offset = float(np.linalg.norm(xyz[-1]))
    if t0_offset > T0_POSITION_TOLERANCE:
        raise ModelInputError(
            f"history_xyz[-1] (t0) must be the origin of the t0 frame, have {xyz[-1].tolist()} "
            f"({t0_offset:.4g} m from it, need <= {T0_POSITION_TOLERANCE} m)")
    t0_rot_err = float(np.abs(rot[-1] - np.eye(3)).max())
    if t0_rot_err > ROTATION_TOLERANCE:
        raise ModelInputError(
            f"history_rot[-1] (t0) must be the identity, have max |R - I| = {t0_rot_err:.4g} "
            f"(need <= {ROTATION_TOLERANCE})")
    return xyz, rot


def validate_model_input(model_input: ModelInput) -> ModelInput:
    """Check a ModelInput and return a normalised copy (frame array, or a tuple of frames
    when they came as a list; float64 history; camera ids as a tuple of ints, one per
    4 frames; the navigation text a str or None)."""
    if not isinstance(model_input, ModelInput):
        raise ModelInputError(f"need a ModelInput, have {type(model_input).__name__}")
    frames = normalize_frames(model_input.frames)
    xyz, rot = normalize_history(model_input.history_xyz, model_input.history_rot)
    cameras = model_input.camera_indices
    if cameras is not None:
        try:
            cameras = tuple(int(i) for i in cameras)
        except (TypeError, ValueError) as exc:
            raise ModelInputError(f"camera_indices must be integers, have {cameras!r}") from exc
        if len(cameras) * FRAMES_PER_CAMERA != len(frames):
            raise ModelInputError(f"camera_indices name {len(cameras)} cameras, the frames "
                                  f"are {len(frames)} ({len(frames) // FRAMES_PER_CAMERA} "
                                  f"cameras x {FRAMES_PER_CAMERA})")
    text = model_input.navigation_text
    if text is not None and not isinstance(text, str):
        raise ModelInputError(f"navigation_text must be a str or None, have "
                              f"{type(text).__name__}")
    return ModelInput(frames=frames, history_xyz=xyz, history_rot=rot,
                      frame_keys=model_input.frame_keys, camera_indices=cameras,
                      navigation_text=text)
