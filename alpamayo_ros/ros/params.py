"""The planner node's parameter schema: one table, from which everything else is derived.

`PLANNER_PARAMETERS` lists every parameter once (name, type, default, description, range or
choices). From it come the rclpy declarations (with ParameterDescriptor ranges), the
validation at start-up, the defaults the launch file and config/planner.yaml must match, and
the table in docs/parameters.md (`python -m alpamayo_ros.ros.params --write-docs`).

This module imports rclpy only inside `declare_and_read`, so the docs generator and the
tests of the table run without a ROS context.
"""
from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.types import DEFAULT_CAMERA_INDICES, NUM_CAMERAS, InferenceOptions

# Value types a parameter may have (the ROS parameter types the node uses).
BOOL = "bool"
INT = "int"
FLOAT = "float"
STRING = "string"
INT_ARRAY = "int[]"
FLOAT_ARRAY = "float[]"
STRING_ARRAY = "string[]"

_PY_TYPES = {BOOL: bool, INT: int, FLOAT: float, STRING: str}
_ARRAY_ITEM = {INT_ARRAY: INT, FLOAT_ARRAY: FLOAT, STRING_ARRAY: STRING}


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: ROS name, type, default, description and allowed values.

    minimum/maximum bound numeric values (inclusive; for arrays, every element).
    choices lists the allowed strings (for string arrays, every element).
    length fixes the length of an array parameter.
    """

    name: str
    type: str
    default: Any
    description: str
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    choices: Optional[tuple[str, ...]] = None
    length: Optional[int] = None
    read_only: bool = True

    def range_text(self) -> str:
        """Human-readable allowed values, for docs and error messages."""
        parts = []
        if self.minimum is not None or self.maximum is not None:
            lo = "-inf" if self.minimum is None else _fmt(self.minimum)
            hi = "inf" if self.maximum is None else _fmt(self.maximum)
            parts.append(f"[{lo}, {hi}]")
        if self.choices:
            parts.append(" | ".join(f'"{c}"' for c in self.choices))
        if self.length is not None:
            parts.append(f"length {self.length}")
        return "; ".join(parts)


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt(v) for v in value) + "]"
    return str(value)


MODEL_BACKENDS = ("alpamayo", "constant_velocity")
CAMERA_TRANSPORTS = ("raw", "compressed")
MODEL_DTYPES = ("auto", "bfloat16", "float16", "float32")
_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?)$")

# The one table. Names are grouped (core.*, model.*, ...); the order is the docs order.
PLANNER_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("rate_hz", FLOAT, 2.0,
              "Planning rate [Hz] on the node clock (sim time when use_sim_time). Ticks that "
              "arrive while an inference runs are dropped and counted, never queued.",
              minimum=0.05, maximum=50.0),
    ParamSpec("camera_topics", STRING_ARRAY,
              ["cameras/cross_left_120fov/image", "cameras/front_wide_120fov/image",
               "cameras/cross_right_120fov/image", "cameras/front_tele_30fov/image"],
              "Image topic of each model camera, in the order of camera_indices.",
              length=NUM_CAMERAS),
    ParamSpec("camera_indices", INT_ARRAY, list(DEFAULT_CAMERA_INDICES),
              "Alpamayo camera index of each topic (strictly ascending; R1 uses 0 1 2 6 = "
              "cross_left, front_wide, cross_right, front_tele).",
              minimum=0, maximum=6, length=NUM_CAMERAS),
    ParamSpec("camera_transports", STRING_ARRAY, ["raw"] * NUM_CAMERAS,
              "Per camera: \"raw\" = sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8), "
              "\"compressed\" = sensor_msgs/CompressedImage (JPEG or PNG).",
              choices=CAMERA_TRANSPORTS, length=NUM_CAMERAS),
    ParamSpec("odometry_topic", STRING, "odometry",
              "nav_msgs/Odometry of the rear-axle base frame (pose in the odometry frame)."),
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
    # PlannerConfig of the ROS-free core: "core.<field>" -> PlannerConfig.<field>
    # (camera_indices comes from the top-level parameter). test_params.py checks that this
    # block names exactly the PlannerConfig fields.
    ParamSpec("core.camera_names", STRING_ARRAY, ["", "", "", ""],
              "Camera names shown in messages and diagnostics; all \"\" = the rig names by "
              "camera index.", length=NUM_CAMERAS),
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
    ParamSpec("core.frame_tolerance", FLOAT, 0.1,
              "A selected frame may be at most this much older than its target time "
              "t0-0.3 .. t0 [s], else the tick is skipped.", minimum=0.001, maximum=10.0),
    ParamSpec("core.max_extrapolation", FLOAT, 0.05,
              "History poses may lie at most this far outside the odometry samples [s].",
              minimum=0.0, maximum=1.0),
    ParamSpec("core.max_odometry_gap", FLOAT, 0.2,
              "Largest time between consecutive odometry samples around the history [s].",
              minimum=0.001, maximum=10.0),
    ParamSpec("core.interpolation", STRING, "spline",
              "History translation interpolation (rotation is always slerp).",
              choices=("spline", "linear")),
    ParamSpec("core.base_offset_xyz", FLOAT_ARRAY, [0.0, 0.0, 0.0],
              "Rear-axle base frame position in the odometry child frame [m].",
              minimum=-100.0, maximum=100.0, length=3),
    ParamSpec("core.base_offset_rpy", FLOAT_ARRAY, [0.0, 0.0, 0.0],
              "Rear-axle base frame roll/pitch/yaw in the odometry child frame [rad].",
              minimum=-math.pi, maximum=math.pi, length=3),
    ParamSpec("core.max_input_age", FLOAT, 0.5,
              "Skip a tick when now - t0 (newest usable frame) exceeds this, on the node "
              "clock [s]; also the STALE limit of the input diagnostics.",
              minimum=0.001, maximum=600.0),
    ParamSpec("core.max_odometry_age", FLOAT, 0.5,
              "Skip a tick when now - newest odometry stamp exceeds this [s].",
              minimum=0.001, maximum=600.0),
    ParamSpec("core.time_jump_tolerance", FLOAT, 1.0,
              "A stamp older than its buffer's newest by more than this is a time jump (bag "
              "loop, simulator reset): all buffers are cleared [s].",
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
    ParamSpec("core.output_image_size", INT_ARRAY, [0, 0],
              "(width, height) every frame is resized to [px]; [0, 0] = native size.",
              minimum=0, maximum=8192, length=2),
    # The model and its inference options.
    ParamSpec("model.backend", STRING, "alpamayo",
              "\"alpamayo\" = the Alpamayo-R1 runtime; \"constant_velocity\" = a kinematic "
              "stand-in for dry runs and controller tests (no torch).",
              choices=MODEL_BACKENDS),
    ParamSpec("model.checkpoint_dir", STRING, "",
              "Directory of the Alpamayo-R1 checkpoint (config.json + safetensors). Required "
              "for model.backend alpamayo."),
    ParamSpec("model.processor_dir", STRING, "",
              "Directory of the base VLM tokenizer/processor; \"\" = resolve from the "
              "checkpoint's vlm_name_or_path."),
    ParamSpec("model.device", STRING, "cuda",
              "Torch device: cpu, cuda or cuda:N."),
    ParamSpec("model.dtype", STRING, "auto",
              "Weight/activation dtype; auto = bfloat16 on CUDA, float32 on CPU.",
              choices=MODEL_DTYPES),
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
)

PARAMETERS_BY_NAME: dict[str, ParamSpec] = {p.name: p for p in PLANNER_PARAMETERS}


def defaults(specs: Sequence[ParamSpec] = PLANNER_PARAMETERS) -> dict[str, Any]:
    """Default value of every parameter (fresh lists, safe to mutate)."""
    return {p.name: (list(p.default) if isinstance(p.default, list) else p.default)
            for p in specs}


def _check_scalar(spec: ParamSpec, item_type: str, value: Any, where: str) -> list[str]:
    errors = []
    py_type = _PY_TYPES[item_type]
    # bool is an int subclass in Python: reject it explicitly for numeric parameters.
    ok = isinstance(value, py_type) and not (py_type is not bool and isinstance(value, bool))
    if item_type == FLOAT and isinstance(value, int) and not isinstance(value, bool):
        ok = True  # an int where a float is expected is harmless
    if not ok:
        return [f"{where}: have {type(value).__name__} {value!r}, need {item_type}"]
    if item_type in (INT, FLOAT):
        if item_type == FLOAT and not math.isfinite(value):
            errors.append(f"{where}: have {value!r}, need a finite number")
        if spec.minimum is not None and value < spec.minimum:
            errors.append(f"{where}: have {value!r}, need >= {_fmt(spec.minimum)}")
        if spec.maximum is not None and value > spec.maximum:
            errors.append(f"{where}: have {value!r}, need <= {_fmt(spec.maximum)}")
    if item_type == STRING and spec.choices and value not in spec.choices:
        errors.append(f"{where}: have {value!r}, need one of {', '.join(spec.choices)}")
    return errors


def validate(values: Mapping[str, Any], specs: Sequence[ParamSpec] = PLANNER_PARAMETERS,
             cross_checks: Optional[Callable[[Mapping[str, Any]], list[str]]] = None
             ) -> dict[str, Any]:
    """Check types, ranges, choices, lengths and cross-parameter rules.

    values: parameter name -> value; missing names take their default, unknown names are
    an error. specs: the table (the planner's by default, whose cross checks then apply).
    Returns the complete, normalised mapping (float parameters as float, arrays as lists).
    Raises ConfigError listing every problem (have/need) at once.
    """
    if cross_checks is None and specs is PLANNER_PARAMETERS:
        cross_checks = _cross_checks
    unknown = sorted(set(values) - {s.name for s in specs})
    errors = [f"unknown parameter {name!r}" for name in unknown]
    out = defaults(specs)
    for spec in specs:
        if spec.name not in values:
            continue
        value = values[spec.name]
        if spec.type in _ARRAY_ITEM:
            if not isinstance(value, (list, tuple)):
                errors.append(f"{spec.name}: have {type(value).__name__} {value!r}, "
                              f"need {spec.type}")
                continue
            value = list(value)
            if spec.length is not None and len(value) != spec.length:
                errors.append(f"{spec.name}: have {len(value)} entries, need {spec.length}")
            for i, item in enumerate(value):
                errors += _check_scalar(spec, _ARRAY_ITEM[spec.type], item,
                                        f"{spec.name}[{i}]")
            if spec.type == FLOAT_ARRAY:
                value = [float(v) for v in value]
        else:
            errors += _check_scalar(spec, spec.type, value, spec.name)
            if spec.type == FLOAT and isinstance(value, (int, float)):
                value = float(value)
        out[spec.name] = value
    if not errors and cross_checks is not None:
        errors += cross_checks(out)
    if errors:
        raise ConfigError("invalid parameters:\n  " + "\n  ".join(errors))
    return out


def _cross_checks(values: Mapping[str, Any]) -> list[str]:
    errors = []
    indices = values["camera_indices"]
    if any(b <= a for a, b in zip(indices, indices[1:])):
        errors.append(f"camera_indices: have {indices}, need strictly ascending "
                      f"(the model's camera order, e.g. {list(DEFAULT_CAMERA_INDICES)})")
    topics = values["camera_topics"]
    if any(not t for t in topics):
        errors.append(f"camera_topics: have {topics}, need 4 non-empty topic names")
    if len(set(topics)) != len(topics):
        errors.append(f"camera_topics: have {topics}, need 4 distinct topics")
    if not values["odometry_topic"]:
        errors.append("odometry_topic: have \"\", need a topic name")
    if not _DEVICE_RE.match(values["model.device"]):
        errors.append(f"model.device: have {values['model.device']!r}, "
                      "need cpu, cuda or cuda:N")
    if values["model.backend"] == "alpamayo" and not values["model.checkpoint_dir"]:
        errors.append("model.checkpoint_dir: have \"\", need the checkpoint directory when "
                      "model.backend is \"alpamayo\" (or set model.backend to "
                      "\"constant_velocity\" for a dry run)")
    return errors


CORE_PREFIX = "core."


def core_config_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """PlannerConfig.from_dict input from validated node parameters."""
    out = {name[len(CORE_PREFIX):]: value for name, value in values.items()
           if name.startswith(CORE_PREFIX)}
    out["camera_indices"] = tuple(values["camera_indices"])
    # ROS string arrays cannot be empty-typed: all "" means "use the rig names".
    if not any(out.get("camera_names", ())):
        out["camera_names"] = ()
    return out


def inference_options(values: Mapping[str, Any]) -> InferenceOptions:
    """InferenceOptions of every model call, from validated node parameters."""
    seed = values["model.seed"]
    return InferenceOptions(num_samples=values["model.num_samples"],
                            max_coc_tokens=values["model.max_coc_tokens"],
                            diffusion_steps=values["model.diffusion_steps"],
                            sample_coc=values["model.sample_coc"],
                            top_p=values["model.top_p"],
                            temperature=values["model.temperature"],
                            seed=None if seed < 0 else seed)


def declare_and_read(node, specs: Sequence[ParamSpec] = PLANNER_PARAMETERS,
                     cross_checks: Optional[Callable[[Mapping[str, Any]], list[str]]] = None
                     ) -> dict[str, Any]:
    """Declare every parameter of `specs` on an rclpy node (with descriptors) and return the
    values validated by `validate(values, specs, cross_checks)`.

    Type or range violations found by rclpy while applying overrides are turned into one
    ConfigError with have/need text, like the checks of `validate`.
    """
    # rclpy imports stay here so the table is usable without a ROS installation.
    from rcl_interfaces.msg import (FloatingPointRange, IntegerRange,
                                    ParameterDescriptor)
    from rclpy.exceptions import (InvalidParameterTypeException,
                                  InvalidParameterValueException)
    from rclpy.parameter import Parameter

    rclpy_types = {BOOL: Parameter.Type.BOOL, INT: Parameter.Type.INTEGER,
                   FLOAT: Parameter.Type.DOUBLE, STRING: Parameter.Type.STRING,
                   INT_ARRAY: Parameter.Type.INTEGER_ARRAY,
                   FLOAT_ARRAY: Parameter.Type.DOUBLE_ARRAY,
                   STRING_ARRAY: Parameter.Type.STRING_ARRAY}
    values: dict[str, Any] = {}
    errors: list[str] = []
    for spec in specs:
        descriptor = ParameterDescriptor(
            name=spec.name, type=rclpy_types[spec.type].value,
            description=spec.description, additional_constraints=spec.range_text(),
            read_only=spec.read_only, dynamic_typing=False)
        # The ROS ranges are for introspection (rqt, ros2 param describe); `validate` still
        # checks every bound itself so the message can say have/need in one place. A ROS
        # range needs both ends, so a one-sided bound is left to `validate` alone.
        bounded = spec.minimum is not None and spec.maximum is not None
        if spec.type in (INT, INT_ARRAY) and bounded:
            descriptor.integer_range = [IntegerRange(
                from_value=int(spec.minimum), to_value=int(spec.maximum), step=0)]
        elif spec.type in (FLOAT, FLOAT_ARRAY) and bounded:
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(spec.minimum), to_value=float(spec.maximum), step=0.0)]
        try:
            param = node.declare_parameter(spec.name, spec.default, descriptor)
            values[spec.name] = param.value
        except InvalidParameterTypeException as exc:
            errors.append(f"{spec.name}: have a value of the wrong type, need {spec.type} "
                          f"(write floats with a decimal point, e.g. 2.0) [{exc}]")
        except InvalidParameterValueException:
            # rclpy has no public accessor for the raw override that failed.
            override = getattr(node, "_parameter_overrides", {}).get(spec.name)
            have = override.value if override is not None else "?"
            errors.append(f"{spec.name}: have {have!r}, need {spec.range_text()}")
    if errors:
        raise ConfigError("invalid parameters:\n  " + "\n  ".join(errors))
    return validate(values, specs, cross_checks)


# ---------------------------------------------------------------- docs/parameters.md
DOCS_BEGIN = "<!-- BEGIN GENERATED PARAMETER TABLE (python -m alpamayo_ros.ros.params "\
             "--write-docs) -->"
DOCS_END = "<!-- END GENERATED PARAMETER TABLE -->"


def render_markdown_table(specs: Sequence[ParamSpec] = PLANNER_PARAMETERS) -> str:
    """The Markdown table of docs/parameters.md, generated from the schema."""
    lines = ["| name | type | default | allowed | description |",
             "|---|---|---|---|---|"]
    for p in specs:
        cells = [f"`{p.name}`", p.type, f"`{_fmt(p.default)}`", p.range_text(),
                 p.description]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def render_docs_section() -> str:
    return f"{DOCS_BEGIN}\n{render_markdown_table()}\n{DOCS_END}"


def update_docs(path: Path) -> bool:
    """Rewrite the generated section of `path`; returns True when the file changed."""
    text = path.read_text()
    begin, end = text.find(DOCS_BEGIN), text.find(DOCS_END)
    if begin < 0 or end < begin:
        raise ConfigError(f"{path}: markers {DOCS_BEGIN!r} ... {DOCS_END!r} not found")
    new = text[:begin] + render_docs_section() + text[end + len(DOCS_END):]
    if new != text:
        path.write_text(new)
    return new != text


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", type=Path, nargs="?",
                        const=Path(__file__).resolve().parents[2] / "docs" / "parameters.md",
                        help="rewrite the generated table in docs/parameters.md")
    args = parser.parse_args(argv)
    if args.write_docs:
        changed = update_docs(args.write_docs)
        print(f"{args.write_docs}: {'updated' if changed else 'up to date'}")
    else:
        print(render_markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
