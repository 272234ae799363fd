"""The planner's parameters: the one schema table of the node and the replay tool.

`PLANNER_PARAMETERS` lists every parameter of the `alpamayo_planner` node once (name, type,
default, description, range or choices). Everything else derives from it: validation of
parameter files and ROS parameters (`validate_parameters`, one rule for node and replay),
the self-validation of PlannerConfig and InferenceOptions (their ranges are the rows'
ranges), the rclpy declarations (alpamayo_ros.ros.params), the defaults that
config/planner.yaml and the launch file must match, and the table in docs/parameters.md
(`python -m alpamayo_ros.core.planner_params --write-docs`).
"""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from alpamayo_ros.core.autoware_trajectory import (AUTOWARE_PARAMETERS, ENABLED_PARAMETER,
                                                  TOPIC_PARAMETER, trajectory_output)
from alpamayo_ros.core.param_schema import (BOOL, FLOAT, STRING, STRING_ARRAY, ParamSpec,
                                            docs_main, validate)
from alpamayo_ros.core.config import (CAMERA_INDICES_PARAMETER, CORE_PARAMETERS, CORE_PREFIX,
                                      DEFAULT_ODOMETRY_TOPIC, PlannerConfig, camera_topic)
from alpamayo_ros.core.types import (DEFAULT_CAMERA_INDICES, INFERENCE_PARAMETERS,
                                     MAX_CAMERAS, NUM_CAMERAS, InferenceOptions)

# Name of the planner node: its parameter-file section and its ROS node name.
NODE_NAME = "alpamayo_planner"


@dataclass(frozen=True)
class ModelBackend:
    """One value of model.backend: its loader ("module:function" taking the parameter
    values and the InferenceOptions, returning (PlannerModel, ModelDescription); imported
    only when chosen, so torch loads only for the real model), whether it needs
    model.checkpoint_dir, and what it is (for the parameter's description)."""

    name: str
    loader: str
    needs_checkpoint: bool
    description: str


# The one table of backends: the parameter's choices and description, the cross-check and
# alpamayo_ros.model.backends.load_model all read it.
MODEL_BACKEND_TABLE: tuple[ModelBackend, ...] = (
    ModelBackend("alpamayo", "alpamayo_ros.model.backends:load_alpamayo", True,
                 "the Alpamayo-R1 runtime"),
    ModelBackend("constant_velocity", "alpamayo_ros.model.backends:load_constant_velocity",
                 False, "a kinematic stand-in for dry runs and controller tests (no torch)"),
)
BACKENDS_BY_NAME: dict[str, ModelBackend] = {b.name: b for b in MODEL_BACKEND_TABLE}
MODEL_BACKENDS = tuple(BACKENDS_BY_NAME)
CAMERA_TRANSPORTS = ("raw", "compressed")
MODEL_DTYPES = ("auto", "bfloat16", "float16", "float32")
# Parameters every ROS node has that are not the planner's own (accepted, not validated).
ROS_ONLY_PARAMETERS = ("use_sim_time", "start_type_description_service")
_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")

# The one table. Names are grouped (core.*, model.*, ...); the order is the docs order.
PLANNER_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("rate_hz", FLOAT, 2.0,
              "Planning rate [Hz] on the node clock (sim time when use_sim_time). Ticks that "
              "arrive while an inference runs are dropped and counted, never queued.",
              minimum=0.05, maximum=50.0),
    ParamSpec("camera_topics", STRING_ARRAY,
              [camera_topic(index) for index in DEFAULT_CAMERA_INDICES],
              "Image topic of each model camera, in the order of camera_indices (as many as "
              "camera_indices).", length_range=(1, MAX_CAMERAS)),
    CAMERA_INDICES_PARAMETER,
    ParamSpec("camera_transports", STRING_ARRAY, ["raw"] * NUM_CAMERAS,
              "Per camera: \"raw\" = sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8), "
              "\"compressed\" = sensor_msgs/CompressedImage (JPEG or PNG).",
              choices=CAMERA_TRANSPORTS, length_range=(1, MAX_CAMERAS)),
    ParamSpec("odometry_topic", STRING, DEFAULT_ODOMETRY_TOPIC,
              "nav_msgs/Odometry of the rear-axle base frame (pose in the odometry frame)."),
    ParamSpec("inputs.reliable", BOOL, False,
              "Subscribe to the cameras and the odometry reliably. Default best effort, the "
              "sensor convention (a reliable subscription does not match a best-effort "
              "driver; a best-effort one matches any). The closed loop's lockstep sets it: "
              "carla_sim (and carla-ros-bridge) publish reliably, and then no sample is lost "
              "under load or before discovery completed, and carla_sim can wait for the "
              "planner to have received a tick's data (tick_settle.await_acks)."),
    ParamSpec("autostart", BOOL, True,
              "Configure (load and warm up the model) and activate at start, so the plain "
              "executable and ros2 launch plan with no lifecycle manager; false: wait for "
              "a manager's configure/activate transitions."),
    ParamSpec("base_frame_id", STRING, "base_link",
              "frame_id written on outputs in the t0 base frame (rear axle at t0)."),
    ParamSpec("diagnostics.period", FLOAT, 1.0,
              "Period of the /diagnostics publication [s].", minimum=0.1, maximum=60.0),
    ParamSpec("diagnostics.max_camera_skew", FLOAT, 0.1,
              "Diagnostics WARN when the newest frames of the 4 cameras spread more than "
              "this [s].", minimum=0.0, maximum=10.0),
    ParamSpec("markers.enabled", BOOL, True,
              "Publish alpamayo/markers (candidate paths + CoC text) for RViz."),
    ParamSpec("markers.coc_text_height", FLOAT, 0.6,
              "Height of the CoC text marker [m].", minimum=0.05, maximum=10.0),
    *AUTOWARE_PARAMETERS,
    *CORE_PARAMETERS,
    # The model and its inference options.
    ParamSpec("model.backend", STRING, "alpamayo",
              "; ".join(f"\"{b.name}\" = {b.description}" for b in MODEL_BACKEND_TABLE) + ".",
              choices=MODEL_BACKENDS),
    ParamSpec("model.checkpoint_dir", STRING, "",
              "Directory of the Alpamayo-R1 checkpoint (config.json + safetensors). Required "
              "for model.backend alpamayo."),
    ParamSpec("model.processor_dir", STRING, "",
              "Directory of the base VLM tokenizer/processor; \"\" = resolve from the "
              "checkpoint's vlm_name_or_path."),
    ParamSpec("model.device", STRING, "cuda",
              "Torch device: cpu, cuda or cuda:N."),
    ParamSpec("model.fast_path", BOOL, True,
              "Real-time inference path: static KV cache, decode and flow-matching steps "
              "replayed as CUDA graphs on CUDA (the same fixed-shape code without graphs on "
              "CPU), sync-free sampling, vision features of frames seen in the previous "
              "tick reused. false = the eager reference path."),
    ParamSpec("model.dtype", STRING, "auto",
              "Weight/activation dtype; auto = bfloat16 on CUDA, float32 on CPU.",
              choices=MODEL_DTYPES),
    *INFERENCE_PARAMETERS,
)

PARAMETERS_BY_NAME: dict[str, ParamSpec] = {p.name: p for p in PLANNER_PARAMETERS}
DOCS_GENERATOR = "python -m alpamayo_ros.core.planner_params --write-docs"


def _cross_checks(values: Mapping[str, Any]) -> list[str]:
    errors = []
    indices = values["camera_indices"]
    if any(b <= a for a, b in zip(indices, indices[1:])):
        errors.append(f"camera_indices: have {indices}, need strictly ascending "
                      f"(the model's camera order, e.g. {list(DEFAULT_CAMERA_INDICES)})")
    topics, count = values["camera_topics"], len(indices)
    for name in ("camera_topics", "camera_transports"):
        if len(values[name]) != count:
            errors.append(f"{name}: have {len(values[name])} entries, need one per "
                          f"camera_indices entry ({count})")
    if any(not t for t in topics):
        errors.append(f"camera_topics: have {topics}, need {count} non-empty topic names")
    if len(set(topics)) != len(topics):
        errors.append(f"camera_topics: have {topics}, need {count} distinct topics")
    if not values["odometry_topic"]:
        errors.append("odometry_topic: have \"\", need a topic name")
    if values[ENABLED_PARAMETER] and not values[TOPIC_PARAMETER]:
        errors.append(f"{TOPIC_PARAMETER}: have \"\", need a topic name when "
                      f"{ENABLED_PARAMETER} is true")
    if not _DEVICE_RE.match(values["model.device"]):
        errors.append(f"model.device: have {values['model.device']!r}, "
                      "need cpu, cuda or cuda:N")
    backend = BACKENDS_BY_NAME.get(values["model.backend"])
    if backend is not None and backend.needs_checkpoint and not values["model.checkpoint_dir"]:
        errors.append("model.checkpoint_dir: have \"\", need the checkpoint directory when "
                      f"model.backend is \"{backend.name}\" (or set model.backend to "
                      "\"constant_velocity\" for a dry run)")
    return errors


def validate_parameters(values: Mapping[str, Any]) -> dict[str, Any]:
    """Complete, normalised planner parameters from `values` (missing = default).

    The one acceptance rule of the node and the replay tool: types (ints accepted where a
    float is declared), ranges, choices, lengths, unknown names (with the closest known
    name) and the cross-parameter rules. ROS-only names (use_sim_time) are ignored.
    Raises ConfigError listing every problem.
    """
    own = {k: v for k, v in values.items() if k not in ROS_ONLY_PARAMETERS}
    return validate(own, PLANNER_PARAMETERS, _cross_checks)


def core_config_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """PlannerConfig.from_dict input from validated planner parameters."""
    out = {name[len(CORE_PREFIX):]: value for name, value in values.items()
           if name.startswith(CORE_PREFIX)}
    out["camera_indices"] = tuple(values["camera_indices"])
    # ROS string arrays cannot be empty-typed: all "" means "use the rig names".
    if not any(out.get("camera_names", ())):
        out["camera_names"] = ()
    return out


def planner_config(values: Mapping[str, Any]) -> PlannerConfig:
    """The PlannerConfig of validated planner parameters."""
    return PlannerConfig.from_dict(core_config_values(values))


def inference_options(values: Mapping[str, Any]) -> InferenceOptions:
    """The InferenceOptions of every model call, from validated planner parameters."""
    seed = values["model.seed"]
    return InferenceOptions(num_samples=values["model.num_samples"],
                            max_coc_tokens=values["model.max_coc_tokens"],
                            diffusion_steps=values["model.diffusion_steps"],
                            sample_coc=values["model.sample_coc"],
                            top_p=values["model.top_p"],
                            temperature=values["model.temperature"],
                            seed=None if seed < 0 else seed,
                            nav_guidance_scale=values["model.nav_guidance_scale"])


def optional_outputs(values: Mapping[str, Any]) -> list:
    """The configured outputs of other message packages (Autoware's Trajectory): each has a
    topic (as configured), msg_type, enabled_by (its parameter) and build(result) -> the
    plain-data message of a tick, or None. The node and the replay publish them through
    their rows of core.outputs.OUTPUTS; this is their configuration as the parameters
    give it (e.g. for a launch file or a check)."""
    return [o for o in (trajectory_output(values),) if o is not None]


def main(argv: Optional[Sequence[str]] = None) -> int:
    return docs_main(argv, PLANNER_PARAMETERS,
                     Path(__file__).resolve().parents[2] / "docs" / "parameters.md",
                     DOCS_GENERATOR, __doc__.splitlines()[0])

if __name__ == "__main__":
    sys.exit(main())
