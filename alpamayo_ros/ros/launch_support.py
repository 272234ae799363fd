"""What launch/planner.launch.py passes to the planner node, as plain functions.

The launch file only wraps these in launch substitutions, so the rules are testable (and
tested) without `ros2 launch`:

* Only what the user set reaches the node: a launch argument left empty adds nothing, so a
  value from the params file, or a `use_sim_time` set by a parent launch file with
  SetParameter, is never overridden by a launch default (`parameter_overrides`).
* A topic argument always wins: the remap goes from the topic the params file (or the
  schema default) configures for that input to the argument's topic (`topic_remaps`), so
  a params file that renames `camera_topics` does not make the argument a silent no-op.
* Arguments are checked like parameters (the planner schema): `rate_hz:=fast` or
  `use_sim_time:=ture` stop the launch with the reason instead of becoming a default.
* A preset (`preset:=autoware`) is a parameter file of the package's config/
  (config/<preset>.yaml) applied over the params file; arguments the user set win over it,
  and topic arguments remap the topics the preset configures (`preset_parameters`).
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Mapping, Optional

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.param_schema import ParamSpec, check_value
from alpamayo_ros.core.parameter_file import read_parameter_file
from alpamayo_ros.core.autoware_trajectory import TOPIC_PARAMETER
from alpamayo_ros.core.planner_params import MODEL_BACKENDS, NODE_NAME, PARAMETERS_BY_NAME
from alpamayo_ros.core.types import MAX_CAMERAS, NUM_CAMERAS

BOOLEAN_CHOICES = ("", "true", "false")
LOG_LEVELS = ("debug", "info", "warn", "error", "fatal")


class LaunchArgument:
    """name, default, description and allowed values (None = any) of one argument."""

    def __init__(self, name: str, default: str, description: str,
                 choices: Optional[tuple] = None) -> None:
        self.name, self.default, self.description, self.choices = \
            name, default, description, choices


# Arguments that become node parameters when set: argument -> parameter.
PARAMETER_ARGUMENTS = {
    "use_sim_time": "use_sim_time",
    "autostart": "autostart",
    "checkpoint_dir": "model.checkpoint_dir",
    "processor_dir": "model.processor_dir",
    "device": "model.device",
    "backend": "model.backend",
    "rate_hz": "rate_hz",
    "trajectory_topic": TOPIC_PARAMETER,
}
# Parameter files of config/ that `preset:=<name>` applies over the params file.
PRESETS = ("autoware",)
CAMERA_TOPIC_ARGUMENTS = tuple(f"camera_{k}_topic" for k in range(NUM_CAMERAS))
ODOMETRY_TOPIC_ARGUMENT = "odometry_topic"

LAUNCH_ARGUMENTS: tuple[LaunchArgument, ...] = (
    LaunchArgument("params_file", "", "Parameter file; empty = "
                   "share/alpamayo_ros/config/planner.yaml"),
    LaunchArgument("preset", "", "Parameters applied over the params file: autoware = "
                   "config/autoware.yaml (Autoware's cameras and kinematic_state, the "
                   "Trajectory output); empty = none", ("",) + PRESETS),
    LaunchArgument("namespace", "", "Namespace of the planner node and its relative topics"),
    LaunchArgument("use_sim_time", "", "Follow /clock; empty = as the params file or a "
                   "parent launch file sets it", BOOLEAN_CHOICES),
    LaunchArgument("autostart", "", "Configure and activate at start (false: wait for a "
                   "lifecycle manager); empty = the params file's autostart", BOOLEAN_CHOICES),
    LaunchArgument("managed", "false", "Start as a launch_ros LifecycleNode (lifecycle "
                   "events visible to the launch system)", ("true", "false")),
    LaunchArgument("checkpoint_dir", "", "Alpamayo-R1 checkpoint; empty = "
                   "model.checkpoint_dir of the params file"),
    LaunchArgument("processor_dir", "", "Local Qwen3-VL base-VLM/processor directory; "
                   "empty = model.processor_dir of the params file"),
    LaunchArgument("device", "", "Torch device cpu, cuda or cuda:N; empty = model.device "
                   "of the params file"),
    LaunchArgument("backend", "", "alpamayo or constant_velocity (dry run, no model); "
                   "empty = model.backend of the params file", ("",) + MODEL_BACKENDS),
    LaunchArgument("rate_hz", "", "Planning rate [Hz]; empty = rate_hz of the params file"),
    LaunchArgument("log_level", "info", "Log level of the node", LOG_LEVELS),
    *(LaunchArgument(name, "", f"Topic of camera slot {k}; empty = camera_topics[{k}] of "
                     "the params file") for k, name in enumerate(CAMERA_TOPIC_ARGUMENTS)),
    LaunchArgument(ODOMETRY_TOPIC_ARGUMENT, "", "nav_msgs/Odometry topic; empty = "
                   "odometry_topic of the params file"),
    LaunchArgument("trajectory_topic", "", "Topic of the Autoware Trajectory output "
                   "(autoware.trajectory.topic); empty = as the params file or preset"),
)
ARGUMENTS_BY_NAME = {a.name: a for a in LAUNCH_ARGUMENTS}

# Node parameters that are not rows of the planner table (ROS's own, or the lifecycle's).
_EXTRA_SPECS = {
    "use_sim_time": ParamSpec("use_sim_time", "bool", False, "Follow /clock."),
}


def _check_choice(name: str, value: str) -> None:
    choices = ARGUMENTS_BY_NAME[name].choices
    if choices is not None and value not in choices:
        shown = ", ".join(repr(c) for c in choices if c) + (" or empty" if "" in choices
                                                             else "")
        raise ConfigError(f"launch argument {name}: have {value!r}, need {shown}")


def _typed(spec: ParamSpec, name: str, text: str) -> Any:
    """A launch argument's text as the parameter's type, checked by the schema."""
    if spec.type == "bool":
        value: Any = text == "true"
    elif spec.type == "float":
        try:
            value = float(text)
        except ValueError:
            raise ConfigError(f"launch argument {name}: have {text!r}, need a number "
                              f"({spec.range_text()})") from None
    else:
        value = text
    value, problems = check_value(spec, value, where=f"launch argument {name}")
    if problems:
        raise ConfigError("; ".join(problems))
    return value


def preset_file(preset: str) -> Path:
    """config/<preset>.yaml of the package: the installed share directory's, else the
    source tree's. ConfigError for an unknown preset or a missing file."""
    _check_choice("preset", preset)
    here = Path(__file__).resolve()
    candidates = [Path(sys.prefix) / "share" / "alpamayo_ros" / "config",
                  here.parents[2] / "config"]
    try:  # a sourced ROS environment names the install prefix in the ament index
        from ament_index_python.packages import get_package_share_directory
        candidates.insert(0, Path(get_package_share_directory("alpamayo_ros")) / "config")
    except Exception:  # not installed or no ament index: the other places are enough
        pass
    for directory in candidates:
        if (directory / f"{preset}.yaml").is_file():
            return directory / f"{preset}.yaml"
    raise ConfigError(f"preset {preset}: no {preset}.yaml in "
                      + ", ".join(str(d) for d in candidates))


def preset_parameters(preset: str) -> dict[str, Any]:
    """Node parameters of a preset ({} for none), as read from its file."""
    return read_parameter_file(preset_file(preset), NODE_NAME) if preset else {}


def parameter_overrides(args: Mapping[str, str]) -> dict[str, Any]:
    """Node parameters of the preset and of the launch arguments the user set (empty ones
    add nothing; a set argument wins over the preset).

    args: launch argument name -> text. Raises ConfigError for a value out of its choices
    or its parameter's type and range.
    """
    out: dict[str, Any] = preset_parameters(args.get("preset", ""))
    for name, text in args.items():
        if name in ARGUMENTS_BY_NAME:
            _check_choice(name, text)
        if name not in PARAMETER_ARGUMENTS or text == "":
            continue
        parameter = PARAMETER_ARGUMENTS[name]
        spec = PARAMETERS_BY_NAME.get(parameter) or _EXTRA_SPECS[parameter]
        out[parameter] = _typed(spec, name, text)
    return out


def configured_topics(params_file: Optional[Path | str], preset: str = ""
                      ) -> tuple[list[str], str]:
    """(camera_topics, odometry_topic) the planner would use with this params file and
    preset (the preset's values, else the file's, else the schema defaults). ConfigError
    when a file cannot be read."""
    values = read_parameter_file(params_file, NODE_NAME) if params_file else {}
    values.update(preset_parameters(preset))
    cameras = list(values.get("camera_topics", PARAMETERS_BY_NAME["camera_topics"].default))
    odometry = values.get("odometry_topic", PARAMETERS_BY_NAME["odometry_topic"].default)
    if not 1 <= len(cameras) <= MAX_CAMERAS:
        raise ConfigError(f"{params_file}: camera_topics has {len(cameras)} entries, "
                          f"need 1 to {MAX_CAMERAS}")
    return [str(t) for t in cameras], str(odometry)


def topic_remaps(params_file: Optional[Path | str], args: Mapping[str, str]
                 ) -> list[tuple[str, str]]:
    """(configured topic, argument topic) for every topic argument the user set."""
    cameras, odometry = configured_topics(params_file, args.get("preset", ""))
    _check_camera_arguments(params_file, cameras, args)
    remaps = [(cameras[k], args[name]) for k, name in enumerate(CAMERA_TOPIC_ARGUMENTS)
              if args.get(name)]
    if args.get(ODOMETRY_TOPIC_ARGUMENT):
        remaps.append((odometry, args[ODOMETRY_TOPIC_ARGUMENT]))
    return remaps


def remap_pair(params_file: Optional[Path | str], args: Mapping[str, str],
               argument: str) -> tuple[str, str]:
    """The remap of one topic argument: (configured, target), or (configured, configured)
    (a no-op) when the argument is empty."""
    cameras, odometry = configured_topics(params_file, args.get("preset", ""))
    _check_camera_arguments(params_file, cameras, args)
    if argument == ODOMETRY_TOPIC_ARGUMENT:
        source = odometry
    elif CAMERA_TOPIC_ARGUMENTS.index(argument) < len(cameras):
        source = cameras[CAMERA_TOPIC_ARGUMENTS.index(argument)]
    else:  # a slot the rig does not have (and an empty argument): a no-op remap
        return odometry, odometry
    return source, args.get(argument) or source


def _check_camera_arguments(params_file, cameras: list, args: Mapping[str, str]) -> None:
    """ConfigError for a camera_<k>_topic argument of a slot the params file's rig lacks."""
    extra = [name for k, name in enumerate(CAMERA_TOPIC_ARGUMENTS)
             if args.get(name) and k >= len(cameras)]
    if extra:
        raise ConfigError(f"{', '.join(extra)}: {params_file or 'the default parameters'} "
                          f"configure {len(cameras)} camera(s) (camera_topics)")
