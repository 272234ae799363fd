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
from alpamayo_ros.core.image_decode import DEFAULT_MAX_IMAGE_PIXELS, MAX_IMAGE_PIXELS_LIMIT
from alpamayo_ros.core.param_schema import (BOOL, FLOAT, FLOAT_ARRAY, INT, INT_ARRAY, STRING,
                                            STRING_ARRAY, ParamSpec, check_fields)
from alpamayo_ros.core.types import DEFAULT_CAMERA_INDICES, MAX_CAMERAS, NUM_CAMERAS

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

# Default (relative) odometry topic of the planner and the scenario tools.
DEFAULT_ODOMETRY_TOPIC = "odometry"


def camera_topic(index: int) -> str:
    """Default (relative) image topic of a rig camera: cameras/<rig name>/image."""
    return f"cameras/{CAMERA_NAMES_BY_INDEX[index]}/image"


INTERPOLATION_METHODS = ("spline", "linear")

# The parameter rows of PlannerConfig: "core.<field>" -> PlannerConfig.<field>, and the
# top-level "camera_indices". They are rows of the planner's parameter table (node and
# replay) and the one definition of each field's type and range; test_params.py checks
# that they name exactly the fields, with the same defaults.
CORE_PREFIX = "core."
CAMERA_INDICES_PARAMETER = ParamSpec(
    "camera_indices", INT_ARRAY, list(DEFAULT_CAMERA_INDICES),
    "Alpamayo camera index of each topic (strictly ascending). An Alpamayo R1 checkpoint "
    "takes exactly 0 1 2 6 = cross_left, front_wide, cross_right, front_tele; an "
    "Alpamayo 1.5 checkpoint any 1 to 7 of 0..6 (3 4 5 = rear_left, rear_tele, "
    "rear_right), checked at configure.",
    minimum=0, maximum=6, length_range=(1, MAX_CAMERAS))
CORE_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("core.camera_names", STRING_ARRAY, [""] * NUM_CAMERAS,
              "Camera names shown in messages and diagnostics, one per camera_indices entry; "
              "all \"\" = the rig names by camera index.", length_range=(1, MAX_CAMERAS)),
    ParamSpec("core.buffer_duration", FLOAT, 1.0,
              "Camera frames kept per camera, back from its newest stamp [s].",
              minimum=0.31, maximum=60.0),
    ParamSpec("core.camera_buffer_max_entries", INT, 128,
              "Hard cap on frames kept per camera.", minimum=4, maximum=10000),
    ParamSpec("core.odometry_buffer_duration", FLOAT, 3.0,
              "Odometry kept, back from the newest stamp [s] (>= 1.5 s + max_odometry_gap).",
              minimum=1.51, maximum=600.0),
    ParamSpec("core.odometry_buffer_max_entries", INT, 1024,
              "Hard cap on odometry samples kept.", minimum=4, maximum=100000),
    ParamSpec("core.frame_tolerance", FLOAT, 0.15,
              "A selected frame may be at most this much older than its target time "
              "t0-0.3 .. t0 [s], else the tick is skipped (FRAME_TOO_OLD). The default "
              "passes a 10 Hz camera with up to 50 ms of stamp jitter and skips a tick "
              "when a frame was dropped (docs/parameters.md).", minimum=0.001, maximum=10.0),
    ParamSpec("core.max_extrapolation", FLOAT, 0.05,
              "History poses may lie at most this far outside the odometry samples [s].",
              minimum=0.0, maximum=1.0),
    ParamSpec("core.max_odometry_gap", FLOAT, 0.2,
              "Largest time between consecutive odometry samples around the history [s].",
              minimum=0.001, maximum=10.0),
    ParamSpec("core.max_speed", FLOAT, 70.0,
              "Physical limit: odometry implying a faster motion over 0.1 s is a "
              "discontinuity (no history across it), and plans with a faster v0 or speed "
              "are INVALID_OUTPUT [m/s].", minimum=1.0, maximum=200.0),
    ParamSpec("core.max_acceleration", FLOAT, 20.0,
              "Physical limit of the odometry's implied acceleration (speeds over 0.1 s) "
              "and of a plan's acceleration [m/s^2].", minimum=1.0, maximum=200.0),
    ParamSpec("core.max_yaw_rate", FLOAT, 2.5,
              "Physical limit of the odometry's implied yaw rate over 0.1 s [rad/s].",
              minimum=0.1, maximum=50.0),
    ParamSpec("core.interpolation", STRING, "spline",
              "History translation interpolation (rotation is always slerp).",
              choices=INTERPOLATION_METHODS),
    ParamSpec("core.base_offset_xyz", FLOAT_ARRAY, [0.0, 0.0, 0.0],
              "Rear-axle base frame position in the odometry child frame [m].",
              minimum=-100.0, maximum=100.0, length=3),
    ParamSpec("core.base_offset_rpy", FLOAT_ARRAY, [0.0, 0.0, 0.0],
              "Rear-axle base frame roll/pitch/yaw in the odometry child frame [rad].",
              minimum=-math.pi, maximum=math.pi, length=3),
    ParamSpec("core.base_offset_tolerance", FLOAT, 0.3,
              "WARN when base_offset_xyz x differs by more than this from the rear-axle "
              "position the odometry shows on curves (core.base_offset estimate) [m].",
              minimum=0.01, maximum=10.0),
    ParamSpec("core.max_input_age", FLOAT, 0.5,
              "Skip a tick when now - t0 (newest usable frame) exceeds this, on the node "
              "clock [s]; also the STALE limit of the input diagnostics.",
              minimum=0.001, maximum=600.0),
    ParamSpec("core.max_odometry_age", FLOAT, 0.5,
              "Skip a tick when now - newest odometry stamp exceeds this [s].",
              minimum=0.001, maximum=600.0),
    ParamSpec("core.max_stamp_lead", FLOAT, 0.5,
              "Inputs stamped more than this ahead of the tick time are refused for the tick "
              "(FUTURE_STAMP) and flagged in the diagnostics [s].",
              minimum=0.001, maximum=600.0),
    ParamSpec("core.time_jump_tolerance", FLOAT, 1.0,
              "A stamp older than its stream's newest by more than this is out of order: "
              "rejected for that stream alone; 3 such stamps in a row on one stream are a "
              "time jump of that stream (bag loop, simulator reset), which restarts that "
              "stream's buffer. Backward steps of the node clock below this are jitter, "
              "larger ones clear every buffer [s].",
              minimum=0.001, maximum=600.0),
    ParamSpec("core.first_waypoint_abs_tolerance", FLOAT, 0.3,
              "Output check: allowed |first waypoint distance - v0 * 0.1 s| [m] ...",
              minimum=0.0, maximum=100.0),
    ParamSpec("core.first_waypoint_rel_tolerance", FLOAT, 0.3,
              "... plus this fraction of v0 * 0.1 s [-].", minimum=0.0, maximum=100.0),
    ParamSpec("core.max_backward_motion", FLOAT, 0.5,
              "Output check: largest distance travelled against the heading [m].",
              minimum=0.001, maximum=1000.0),
    ParamSpec("core.decode_cache_size", INT, 48,
              "Decoded frames kept across ticks (12 of 16 frames repeat at 10 Hz).",
              minimum=16, maximum=10000),
    ParamSpec("core.decode_threads", INT, 4,
              "Threads decoding camera frames off the tick: ahead of it and in parallel "
              "(0 = every frame is decoded in the tick, one after another).",
              minimum=0, maximum=64),
    ParamSpec("core.decode_ahead", BOOL, True,
              "After each frame, queue the decodes of the frames a tick then would select, "
              "so a tick finds them decoded (needs decode_threads >= 1)."),
    ParamSpec("core.output_image_size", INT_ARRAY, [0, 0],
              "(width, height) every frame is resized to [px]; [0, 0] = native size.",
              minimum=0, maximum=8192, length=2),
    ParamSpec("core.max_image_pixels", INT, DEFAULT_MAX_IMAGE_PIXELS,
              "A frame whose size (message fields, JPEG/PNG header) exceeds this many pixels "
              "is refused before it is decoded (DecodeError); default 8K UHD, 7680 x 4320.",
              minimum=1024, maximum=MAX_IMAGE_PIXELS_LIMIT),
)
_ROWS_BY_FIELD = {"camera_indices": CAMERA_INDICES_PARAMETER,
                  **{p.name[len(CORE_PREFIX):]: p for p in CORE_PARAMETERS}}


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
    frame_tolerance: float = 0.15
    # History poses may lie at most this far outside the odometry samples [s] (0 = never).
    max_extrapolation: float = 0.05
    # Largest allowed time between consecutive odometry samples around the history [s].
    max_odometry_gap: float = 0.2
    # Physical limits of the motion the odometry implies (over >= 0.1 s) and of plans:
    # speed [m/s], acceleration [m/s^2], yaw rate [rad/s].
    max_speed: float = 70.0
    max_acceleration: float = 20.0
    max_yaw_rate: float = 2.5
    # Translation interpolation: "spline" (scipy CubicSpline) or "linear"; rotation: slerp.
    interpolation: str = "spline"
    # Pose of the rear-axle base frame in the odometry child frame: translation [m] and
    # roll/pitch/yaw [rad] (extrinsic xyz). E.g. CARLA's actor origin is the vehicle centre,
    # so base_offset_xyz x is negative there, about -wheelbase/2 (docs/parameters.md;
    # core.base_offset estimates it from the odometry).
    base_offset_xyz: tuple = (0.0, 0.0, 0.0)
    base_offset_rpy: tuple = (0.0, 0.0, 0.0)
    # Largest accepted difference between base_offset_xyz x and the rear-axle position
    # estimated from the odometry on curves (core.base_offset) before a warning [m].
    base_offset_tolerance: float = 0.3
    # Skip a tick when now - t0 exceeds this [s].
    max_input_age: float = 0.5
    # Skip a tick when now - newest odometry stamp exceeds this [s].
    max_odometry_age: float = 0.5
    # Inputs stamped more than this ahead of the tick are refused for the tick [s].
    max_stamp_lead: float = 0.5
    # A stamp older than its stream's newest by more than this is out of order (rejected);
    # TIME_JUMP_CONFIRMATIONS in a row on one stream restart that stream's buffer [s].
    time_jump_tolerance: float = 1.0
    # Output check: |first waypoint distance - |v0| * 0.1 s| must not exceed
    # first_waypoint_abs_tolerance + first_waypoint_rel_tolerance * |v0| * 0.1 s [m, -].
    first_waypoint_abs_tolerance: float = 0.3
    first_waypoint_rel_tolerance: float = 0.3
    # Output check: total distance travelled backwards (against the heading) [m].
    max_backward_motion: float = 0.5
    # Decoded frames kept across ticks, keyed by (camera slot, stamp).
    decode_cache_size: int = 48
    # Threads decoding frames off the tick; decode_ahead: decode what a tick would select
    # as frames arrive (see core/frame_decoder.py).
    decode_threads: int = 4
    decode_ahead: bool = True
    # Optional (width, height) every frame is resized to [px]; None = native size (then all
    # 16 frames must already share one size, else the tick is skipped).
    output_image_size: Optional[tuple] = None
    # Frames larger than this many pixels (from their header) are refused undecoded: a
    # hostile 600-byte JPEG claiming 20000x20000 px would cost seconds and GBs.
    max_image_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

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
        # Types and ranges of single fields come from the parameter table (one definition
        # for the node, the replay tool and this class); the rules below relate fields.
        skip = {"output_image_size"} | ({"camera_names"} if not self.camera_names else set())
        errors = check_fields(self, {f: row for f, row in _ROWS_BY_FIELD.items()
                                     if f not in skip})
        if errors:
            raise ConfigError("invalid planner settings: " + "; ".join(errors))
        idx = self.camera_indices
        if list(idx) != sorted(set(idx)):
            raise ConfigError(f"camera_indices must be ascending and unique, have {idx!r}")
        if self.camera_names and len(self.camera_names) != len(idx):
            raise ConfigError(f"camera_names: have {len(self.camera_names)} names, need one "
                              f"per camera index ({len(idx)})")
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
