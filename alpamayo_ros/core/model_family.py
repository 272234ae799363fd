"""The two Alpamayo checkpoint families and what each accepts (numpy-free plain data).

The family comes from ``model_type`` in the checkpoint's config.json:

* ``alpamayo_r1`` (Alpamayo 1, "R1"): exactly the 4 cameras 0, 1, 2, 6; the prompt names
  no camera; no navigation text, no questions.
* ``alpamayo1_5`` (Alpamayo 1.5): any 1 to 7 cameras, each named in the prompt with its
  display name and frame numbers; an optional navigation instruction
  (``<|route_start|>...<|route_end|>``, optionally with classifier-free guidance); visual
  question answering.

The planner core checks a camera rig against the family at configure (check_camera_rig),
the model runtime builds the family's prompt; both read the facts from here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

from alpamayo_ros.core.errors import ConfigError

R1 = "alpamayo_r1"
ALPAMAYO_1_5 = "alpamayo1_5"
# Camera ids of the NVIDIA rig (as the official loaders number them): 0 cross_left_120fov,
# 1 front_wide_120fov, 2 cross_right_120fov, 3 rear_left_70fov, 4 rear_tele_30fov,
# 5 rear_right_70fov, 6 front_tele_30fov.
NUM_RIG_CAMERAS = 7
# What the 1.5 prompt calls each camera (official helper.CAMERA_DISPLAY_NAMES); any other
# id is rendered "Camera <id>".
CAMERA_DISPLAY_NAMES = {
    0: "Front left camera",
    1: "Front camera",
    2: "Front right camera",
    3: "Rear left camera",
    4: "Rear camera",
    5: "Rear right camera",
    6: "Front telephoto camera",
}


@dataclass(frozen=True)
class ModelFamily:
    """What one checkpoint family accepts.

    model_type: config.json ``model_type``; label: human name; fixed_cameras: the only
    camera set the family accepts (None: any 1..max_cameras distinct ids); camera_labels:
    the prompt names each camera and numbers its frames; navigation / questions: whether a
    navigation instruction and VQA exist; persistent_buffers: the checkpoint stores the
    action-space constants and Fourier frequencies (else they come from the config).
    """

    model_type: str
    label: str
    fixed_cameras: Optional[tuple[int, ...]]
    max_cameras: int
    camera_labels: bool
    navigation: bool
    questions: bool
    persistent_buffers: bool


FAMILIES = {
    R1: ModelFamily(R1, "Alpamayo R1", fixed_cameras=(0, 1, 2, 6), max_cameras=4,
                    camera_labels=False, navigation=False, questions=False,
                    persistent_buffers=True),
    ALPAMAYO_1_5: ModelFamily(ALPAMAYO_1_5, "Alpamayo 1.5", fixed_cameras=None,
                              max_cameras=NUM_RIG_CAMERAS, camera_labels=True,
                              navigation=True, questions=True, persistent_buffers=False),
}


def family_for_model_type(model_type: object, where: str = "config.json") -> ModelFamily:
    """The family of a config.json ``model_type``; ConfigError naming what was found."""
    family = FAMILIES.get(model_type) if isinstance(model_type, str) else None
    if family is None:
        raise ConfigError(f"{where}: model_type is {model_type!r}, need one of "
                          + ", ".join(f"{k!r} ({f.label})" for k, f in FAMILIES.items()))
    return family


def camera_display_name(index: int) -> str:
    """The 1.5 prompt's name of camera ``index``."""
    return CAMERA_DISPLAY_NAMES.get(int(index), f"Camera {int(index)}")


def check_camera_rig(family: ModelFamily, camera_indices: Sequence[int]) -> None:
    """ConfigError with the reason unless ``camera_indices`` is a rig the family accepts.

    R1: exactly its 4 cameras in ascending order. 1.5: 1..7 distinct ids in 0..6. Duplicate
    ids are refused for both (a camera would be fed twice under one name).
    """
    indices = [int(i) for i in camera_indices]
    duplicates = sorted({i for i in indices if indices.count(i) > 1})
    if duplicates:
        raise ConfigError(f"camera_indices {indices} repeat {duplicates}; each camera may "
                          "appear once")
    if family.fixed_cameras is not None:
        if tuple(indices) != family.fixed_cameras:
            raise ConfigError(
                f"camera_indices {indices} do not fit an {family.label} checkpoint: it "
                f"takes exactly the cameras {list(family.fixed_cameras)} (any 1 to "
                f"{NUM_RIG_CAMERAS} cameras need an Alpamayo 1.5 checkpoint)")
        return
    if not 1 <= len(indices) <= family.max_cameras:
        raise ConfigError(f"camera_indices: have {len(indices)} cameras, an {family.label} "
                          f"checkpoint takes 1 to {family.max_cameras}")
    bad = [i for i in indices if not 0 <= i < NUM_RIG_CAMERAS]
    if bad:
        raise ConfigError(f"camera_indices {bad} are not camera ids of the rig (0 to "
                          f"{NUM_RIG_CAMERAS - 1})")
