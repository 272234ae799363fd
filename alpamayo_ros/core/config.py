"""PlannerConfig: every setting of the ROS-free planner core, validated on construction.

Units: durations and tolerances in seconds, distances in metres, angles in radians.
The node and the replay tool build it from flat parameter dicts with
`PlannerConfig.from_dict` (keys = field names).
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass
from typing import Any, Mapping, Optional

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.types import DEFAULT_CAMERA_INDICES, NUM_CAMERAS

# Names of the Alpamayo rig cameras by camera index (model-spec section 1).
CAMERA_NAMES_BY_INDEX = {
    0: "cross_left_120fov",
    1: "front_wide_120fov",
    2: "cross_right_120fov",
    3: "rear_left_70fov",
    4: "rear_tele_30fov",
    5: "rear_right_70fov",
    6: "front_tele_30fov",
}

INTERPOLATION_METHODS = ("spline", "linear")


@dataclass(frozen=True)
class PlannerConfig:
    """Settings of PlannerCore (buffers, alignment gates, history, output checks).

    Camera slots: slot k (0..3) is the camera with model index camera_indices[k]; frames
    reach the model in slot order (camera-major).
    """

    # Model camera indices, 4 ascending unique ints (R1 uses 0, 1, 2, 6).
    camera_indices: tuple = DEFAULT_CAMERA_INDICES
    # Human-readable camera names per slot (used in messages); () = rig names by index.
    camera_names: tuple = ()
    # How long camera frames are kept, measured back from the newest stamp of each camera [s].
    buffer_duration: float = 1.0
    # Hard cap on frames per camera buffer (memory bound whatever the stamps do).
    camera_buffer_max_entries: int = 128
    # How long odometry samples are kept, measured back from the newest stamp [s].
    odometry_buffer_duration: float = 3.0
    # Hard cap on odometry samples kept.
    odometry_buffer_max_entries: int = 1024
    # A frame may be at most this much older than its target time (t0-0.3 .. t0) [s].
    frame_tolerance: float = 0.1
    # History poses may lie at most this far outside the odometry samples [s] (0 = never).
    max_extrapolation: float = 0.05
    # Largest allowed time between consecutive odometry samples around the history [s].
    max_odometry_gap: float = 0.2
    # Translation interpolation: "spline" (scipy CubicSpline) or "linear"; rotation: slerp.
    interpolation: str = "spline"
    # Pose of the rear-axle base frame in the odometry child frame: translation [m] and
    # roll/pitch/yaw [rad] (extrinsic xyz). E.g. CARLA's actor origin is the vehicle centre,
    # so base_offset_xyz = (-wheelbase/2-ish, 0, -height) there.
    base_offset_xyz: tuple = (0.0, 0.0, 0.0)
    base_offset_rpy: tuple = (0.0, 0.0, 0.0)
    # Skip a tick when now - t0 exceeds this [s].
    max_input_age: float = 0.5
    # Skip a tick when now - newest odometry stamp exceeds this [s].
    max_odometry_age: float = 0.5
    # A stamp older than its buffer's newest by more than this is a time jump (bag loop,
    # simulator reset): every buffer and the decode cache are cleared [s].
    time_jump_tolerance: float = 1.0
    # Output check: |first waypoint distance - |v0| * 0.1 s| must not exceed
    # first_waypoint_abs_tolerance + first_waypoint_rel_tolerance * |v0| * 0.1 s [m, -].
    first_waypoint_abs_tolerance: float = 0.3
    first_waypoint_rel_tolerance: float = 0.3
    # Output check: total distance travelled backwards (against the heading) [m].
    max_backward_motion: float = 0.5
    # Decoded frames kept across ticks, keyed by (camera slot, stamp).
    decode_cache_size: int = 48
    # Optional (width, height) every frame is resized to [px]; None = native size (then all
    # 16 frames must already share one size, else the tick is skipped).
    output_image_size: Optional[tuple] = None

    def __post_init__(self) -> None:
        # Normalise list inputs (YAML / ROS parameters give lists) to tuples.
        for name in ("camera_indices", "camera_names", "base_offset_xyz", "base_offset_rpy"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                object.__setattr__(self, name, tuple(value))
            else:
                raise ConfigError(f"{name} must be a sequence, have {type(value).__name__}")
        size = self.output_image_size
        if size is not None:
            if not (isinstance(size, (list, tuple)) and all(
                    isinstance(v, numbers.Real) and not isinstance(v, bool)
                    and float(v).is_integer() for v in size)):
                raise ConfigError("output_image_size must be (width, height) in whole pixels "
                                  f"or [0, 0] for native size, have {size!r}")
            size = tuple(int(v) for v in size)
            # ROS parameters cannot be None: [0, 0] (or an empty list) means native size.
            object.__setattr__(self, "output_image_size",
                               None if (len(size) == 0 or size == (0, 0)) else size)
        self._validate()

    def _validate(self) -> None:
        idx = self.camera_indices
        if len(idx) != NUM_CAMERAS or any(not isinstance(i, int) or isinstance(i, bool)
                                          for i in idx):
            raise ConfigError(f"camera_indices must be {NUM_CAMERAS} ints, have {idx!r}")
        if list(idx) != sorted(set(idx)):
            raise ConfigError(f"camera_indices must be ascending and unique, have {idx!r}")
        if any(i < 0 for i in idx):
            raise ConfigError(f"camera_indices must be >= 0, have {idx!r}")
        if self.camera_names and len(self.camera_names) != NUM_CAMERAS:
            raise ConfigError(f"camera_names needs {NUM_CAMERAS} names or none, "
                              f"have {len(self.camera_names)}")
        positive = ("buffer_duration", "odometry_buffer_duration", "frame_tolerance",
                    "max_odometry_gap", "max_input_age", "max_odometry_age",
                    "time_jump_tolerance", "max_backward_motion")
        for name in positive:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a finite number > 0, have {value!r}")
        non_negative = ("max_extrapolation", "first_waypoint_abs_tolerance",
                        "first_waypoint_rel_tolerance")
        for name in non_negative:
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a finite number >= 0, have {value!r}")
        # The oldest frame target is t0-0.3 s; the buffer must reach it plus the tolerance.
        need = 0.3 + self.frame_tolerance
        if self.buffer_duration < need:
            raise ConfigError(f"buffer_duration must cover the frame window: have "
                              f"{self.buffer_duration} s, need >= {need:.3f} s "
                              "(0.3 s + frame_tolerance)")
        need = 1.5 + self.max_odometry_gap
        if self.odometry_buffer_duration < need:
            raise ConfigError(f"odometry_buffer_duration must cover the history: have "
                              f"{self.odometry_buffer_duration} s, need >= {need:.3f} s "
                              "(1.5 s + max_odometry_gap)")
        for name, minimum in (("camera_buffer_max_entries", 4),
                              ("odometry_buffer_max_entries", 4),
                              ("decode_cache_size", 16)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ConfigError(f"{name} must be an int >= {minimum}, have {value!r}")
        if self.interpolation not in INTERPOLATION_METHODS:
            raise ConfigError(f"interpolation must be one of {INTERPOLATION_METHODS}, "
                              f"have {self.interpolation!r}")
        for name in ("base_offset_xyz", "base_offset_rpy"):
            value = getattr(self, name)
            if len(value) != 3 or not all(isinstance(v, (int, float)) and math.isfinite(v)
                                          for v in value):
                raise ConfigError(f"{name} must be 3 finite numbers, have {value!r}")
        size = self.output_image_size
        if size is not None and (len(size) != 2 or min(size) < 32):
            raise ConfigError("output_image_size must be (width, height) with both >= 32 "
                              f"or [0, 0] for native size, have {size!r}")

    @property
    def slot_names(self) -> tuple:
        """Name of each camera slot (configured names, else the rig names by index)."""
        if self.camera_names:
            return tuple(self.camera_names)
        return tuple(CAMERA_NAMES_BY_INDEX.get(i, f"camera_{i}") for i in self.camera_indices)

    def describe_slot(self, slot: int) -> str:
        """'camera slot 3 (index 6, front_tele_30fov)' for error messages."""
        return (f"camera slot {slot} (index {self.camera_indices[slot]}, "
                f"{self.slot_names[slot]})")

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, allow_unknown: bool = False
                  ) -> "PlannerConfig":
        """Build from flat keys equal to the field names (lists become tuples).

        Unknown keys raise ConfigError unless allow_unknown (then they are ignored), so a
        node can pass its whole parameter dict.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown and not allow_unknown:
            raise ConfigError(f"unknown planner parameters {unknown}; known: {sorted(names)}")
        kwargs = {k: v for k, v in values.items() if k in names}
        # Ints given where floats are expected are fine; floats given as ints for int
        # fields (e.g. 48.0 from YAML) are converted when they are whole numbers.
        for f in dataclasses.fields(cls):
            if f.name in kwargs and f.type == "int" and isinstance(kwargs[f.name], float) \
                    and kwargs[f.name].is_integer():
                kwargs[f.name] = int(kwargs[f.name])
        if "camera_indices" in kwargs:
            kwargs["camera_indices"] = tuple(int(i) if isinstance(i, float) and i.is_integer()
                                             else i for i in kwargs["camera_indices"])
        return cls(**kwargs)

    def to_dict(self) -> dict:
        """Flat dict of all fields (inverse of from_dict)."""
        return dataclasses.asdict(self)
