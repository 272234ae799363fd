"""Plain data types shared by the model runtime, the planner core, replay and nodes.

Everything here is numpy and dataclasses only, so every layer can use it without torch
or rclpy. Conventions: the t0 frame is the rear-axle base frame at t0 (REP-103: x
forward, y left, z up, metres); times are float seconds; arrays are float64 unless said.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Protocol

import numpy as np

from alpamayo_ros.core.param_schema import BOOL, FLOAT, INT, ParamSpec, check_fields

# Stamps are int nanoseconds; this converts them to float seconds.
NS_PER_S = 1_000_000_000


def stamp_to_ns(stamp) -> int:
    """builtin_interfaces/Time (an rclpy message or a rosbags dataclass alike: both have
    sec and nanosec) -> int ns, exact (no float round trip)."""
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


# The R1 rig (and the default): 4 cameras; Alpamayo 1.5 takes 1..MAX_CAMERAS.
NUM_CAMERAS = 4
MAX_CAMERAS = 7
FRAMES_PER_CAMERA = 4
NUM_FRAMES = NUM_CAMERAS * FRAMES_PER_CAMERA
NUM_HISTORY = 16
HISTORY_DT = 0.1
NUM_WAYPOINTS = 64
WAYPOINT_DT = 0.1
# Frame target offsets relative to t0 [s], oldest first.
FRAME_OFFSETS = (-0.3, -0.2, -0.1, 0.0)
# History sample offsets relative to t0 [s]: -1.5 .. 0.0.
HISTORY_OFFSETS = tuple(round(HISTORY_DT * (k - NUM_HISTORY + 1), 10) for k in range(NUM_HISTORY))
# Waypoint offsets relative to t0 [s]: 0.1 .. 6.4 (waypoint i at 0.1 * (i + 1)).
WAYPOINT_OFFSETS = tuple(round(WAYPOINT_DT * (i + 1), 10) for i in range(NUM_WAYPOINTS))
DEFAULT_CAMERA_INDICES = (0, 1, 2, 6)
# (height, width) of the release's camera images (the rig's 1920x1080 frames).
CAMERA_IMAGE_SHAPE = (1080, 1920)


# The parameter rows of InferenceOptions ("model.<field>"): rows of the planner's parameter
# table and the one definition of each option's type and range.
INFERENCE_PREFIX = "model."
INFERENCE_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("model.num_samples", INT, 1,
              "Trajectory samples (each with its own CoC) per tick.", minimum=1, maximum=16),
    ParamSpec("model.max_coc_tokens", INT, 256,
              "Token limit of the reasoning (CoC) generation.", minimum=1, maximum=4096),
    ParamSpec("model.diffusion_steps", INT, 10,
              "Euler steps of the flow-matching action sampler.", minimum=1, maximum=100),
    ParamSpec("model.sample_coc", BOOL, True,
              "true: nucleus sampling of the CoC (top_p, temperature); false: greedy."),
    ParamSpec("model.top_p", FLOAT, 0.98,
              "Nucleus sampling mass of the CoC.", minimum=0.01, maximum=1.0),
    ParamSpec("model.temperature", FLOAT, 0.6,
              "Sampling temperature of the CoC.", minimum=0.01, maximum=10.0),
    ParamSpec("model.seed", INT, 0,
              "Seed of CoC sampling and diffusion noise; -1 = unseeded (fresh noise each "
              "tick).", minimum=-1, maximum=2**31 - 1),
    ParamSpec("model.nav_guidance_scale", FLOAT, 1.5,
              "Alpamayo 1.5 with a navigation instruction: classifier-free guidance weight w "
              "of each flow-matching velocity, (1 - w) * v(no instruction) + w * "
              "v(instruction); 0 = no guidance (one expert call per step); the default is "
              "the official navigation notebook's.", minimum=0.0, maximum=10.0),
)


@dataclass(frozen=True)
class InferenceOptions:
    """Options of one model call (defaults: one sample, as in the official example)."""

    num_samples: int = 1
    max_coc_tokens: int = 256
    diffusion_steps: int = 10
    # True: nucleus sampling (top_p 0.98, temperature 0.6) as the official code;
    # False: greedy decoding of the reasoning.
    sample_coc: bool = True
    top_p: float = 0.98
    temperature: float = 0.6
    # Seed of the torch generator used for CoC sampling and the diffusion noise;
    # None = unseeded (fresh noise each call).
    seed: Optional[int] = 0
    # Classifier-free guidance weight for a navigation instruction (1.5); 0 = none.
    nav_guidance_scale: float = 1.5

    def __post_init__(self) -> None:
        rows = {p.name[len(INFERENCE_PREFIX):]: p for p in INFERENCE_PARAMETERS}
        if self.seed is None:
            del rows["seed"]
        errors = check_fields(self, rows)
        if self.seed is not None and not errors and self.seed < 0:
            errors.append(f"seed: have {self.seed}, need >= 0 or None (unseeded)")
        if errors:
            from alpamayo_ros.core.errors import ConfigError
            raise ConfigError("invalid inference options: " + "; ".join(errors))


@dataclass(frozen=True)
class ModelInput:
    """What the model sees.

    frames: (4 * C, H, W, 3) uint8 RGB for C cameras (16 for the R1 rig), camera-major
        (cam0 f0..f3, cam1 f0..f3, ...), oldest first within each camera. (C, 4, H, W, 3)
        is accepted and flattened, and so is a tuple/list of 4 * C (H, W, 3) arrays (the
        planner passes its cached frames that way to avoid copying full-resolution
        frames).
    history_xyz: (16, 3) positions in the t0 frame at t0-1.5 .. t0; the last is 0.
    history_rot: (16, 3, 3) rotations in the t0 frame; the last is the identity.
    frame_keys: optional identity of each of the 16 frames (hashable, e.g. (epoch, camera
        slot, header stamp ns)); equal keys promise equal pixels, so a model may reuse
        what it computed for a frame in an earlier call. None: nothing is reused.
    """

    frames: np.ndarray
    history_xyz: np.ndarray
    history_rot: np.ndarray
    frame_keys: Optional[tuple] = None
    # The camera id of each camera block of frames (ascending rig ids, e.g. (0, 1, 2, 6));
    # Alpamayo 1.5 names them in the prompt. None: unnamed (the R1 prompt).
    camera_indices: Optional[tuple[int, ...]] = None
    # Navigation instruction (Alpamayo 1.5), e.g. "Turn left in 40m"; None: none.
    navigation_text: Optional[str] = None


@dataclass
class StageTimings:
    """Wall-clock seconds per stage of one model call."""

    preprocess: float = 0.0
    vision_prefill: float = 0.0
    coc_decode: float = 0.0
    diffusion: float = 0.0
    postprocess: float = 0.0

    @property
    def total(self) -> float:
        return (self.preprocess + self.vision_prefill + self.coc_decode
                + self.diffusion + self.postprocess)


@dataclass
class TrajectorySample:
    """One predicted trajectory in the t0 frame (64 waypoints at t0+0.1 .. t0+6.4 s)."""

    xyz: np.ndarray            # (64, 3)
    rot: np.ndarray            # (64, 3, 3)
    yaw: np.ndarray            # (64,)
    speed: np.ndarray          # (64,)
    acceleration: np.ndarray   # (64,)
    curvature: np.ndarray      # (64,)
    coc: str = ""
    coc_token_count: int = 0
    # True when generation stopped (token limit) before <|traj_future_start|>.
    coc_truncated: bool = False


@dataclass
class ModelOutput:
    samples: list[TrajectorySample]
    v0: float
    timings: StageTimings
    model_id: str = ""
    # Offsets of the waypoints relative to t0 [s]: 0.1 .. 6.4.
    waypoint_offsets: np.ndarray = field(
        default_factory=lambda: np.asarray(WAYPOINT_OFFSETS, dtype=np.float64))


@dataclass(frozen=True)
class InferencePath:
    """Which inference path serves the model calls, and what is wrong with it.

    name: "fast" or "eager" (runtime.AlpamayoRuntime), "" for a backend without paths;
    problem: why the calls run other than configured (the fast path fell back to the eager
    one, or a step runs without its CUDA graph), "" when nothing is wrong.
    """

    name: str = ""
    problem: str = ""


@dataclass(frozen=True)
class ModelDescription:
    """Identity and settings of the loaded model, as published in PlannerOutput.model.

    checkpoint: directory (with the content hash) or "" for a backend without weights;
    model_id: content hash of the weights; device / dtype: where and how it runs; path:
    the inference path and its problem (known after the warm-up).
    """

    checkpoint: str
    model_id: str
    device: str
    dtype: str
    options: InferenceOptions
    # Checkpoint family (config.json model_type: "alpamayo_r1", "alpamayo1_5"); "" for a
    # backend without weights.
    family: str = ""
    path: InferencePath = field(default_factory=InferencePath)


class PlannerModel(Protocol):
    """The single inference API used by the node, the replay tool and the benchmarks.

    Optional, looked up with getattr: ``clear_vision_cache()`` (forget features kept per
    frame key; called when a new PlannerCore starts its frame keys afresh) and
    ``inference_path() -> InferencePath`` (shown in /diagnostics and PlannerOutput.model).
    A model that needs frames of a minimum size has an int attribute `min_frame_side` [px]:
    the planner core skips ticks with smaller frames (SIZE_MISMATCH) instead of calling it.
    """

    model_id: str

    def predict(self, model_input: ModelInput, options: InferenceOptions = InferenceOptions(),
                initial_noise: Optional[np.ndarray] = None) -> ModelOutput:
        ...

    def warmup(self, options: InferenceOptions = InferenceOptions(),
               frame_shape: tuple[int, int] = CAMERA_IMAGE_SHAPE,
               camera_indices: Optional[tuple[int, ...]] = None) -> float:
        """Get ready to serve calls like ``options`` on frames of (height, width) from the
        cameras ``camera_indices`` (None: the R1 rig): allocate, capture, compile. Returns
        the seconds it took."""
        ...
