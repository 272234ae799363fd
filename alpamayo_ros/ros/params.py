"""Parameters of a node from a schema table (alpamayo_ros.core.param_schema): declared on
the rclpy node with descriptors, then validated by the same rule as parameter files.

Float parameters are declared with dynamic typing, so an integer override (`-p rate_hz:=2`,
`rate_hz: 2` in a file) is accepted and read as a float, as the replay tool reads it;
`validate` then checks every type and range in one place. Parameter files are normalised
before rcl reads them (`normalise_parameter_files`): rcl refuses arrays that mix ints and
floats (`[-1.4, 0, 0]`), which the schema accepts.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.param_schema import (BOOL, FLOAT, FLOAT_ARRAY, INT, INT_ARRAY, STRING,
                                            STRING_ARRAY, ParamSpec, closest_name, validate)
from alpamayo_ros.core.parameter_file import normalised_parameter_file
from alpamayo_ros.core.planner_params import (PLANNER_PARAMETERS, ROS_ONLY_PARAMETERS,
                                              validate_parameters)

Validator = Callable[[Mapping[str, Any]], dict]


def declare_parameters(node, specs: Sequence[ParamSpec] = PLANNER_PARAMETERS
                       ) -> tuple[dict[str, Any], list[str]]:
    """Declare every parameter of `specs` on an rclpy node (with descriptors).

    Returns (declared values, problems): overrides of the wrong type for int, bool, string
    and array parameters, or out of a ROS range, are problems with have/need text (the
    parameter keeps its default), so a managed node can come up and fail its configure
    transition with the reason instead of dying at construction.
    """
    # rclpy imports stay here so this module imports without a ROS installation.
    from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor
    from rclpy.exceptions import InvalidParameterTypeException, InvalidParameterValueException
    from rclpy.parameter import Parameter

    rclpy_types = {BOOL: Parameter.Type.BOOL, INT: Parameter.Type.INTEGER,
                   FLOAT: Parameter.Type.DOUBLE, STRING: Parameter.Type.STRING,
                   INT_ARRAY: Parameter.Type.INTEGER_ARRAY,
                   FLOAT_ARRAY: Parameter.Type.DOUBLE_ARRAY,
                   STRING_ARRAY: Parameter.Type.STRING_ARRAY}
    values: dict[str, Any] = {}
    errors: list[str] = []
    for spec in specs:
        is_float = spec.type in (FLOAT, FLOAT_ARRAY)
        descriptor = ParameterDescriptor(
            name=spec.name, type=rclpy_types[spec.type].value,
            description=spec.description, additional_constraints=spec.range_text(),
            read_only=spec.read_only, dynamic_typing=is_float)
        # The ROS ranges are for introspection (rqt, ros2 param describe); the validator
        # checks every bound itself so the message says have/need in one place. A ROS range
        # needs both ends, so a one-sided bound is left to the validator alone.
        bounded = spec.minimum is not None and spec.maximum is not None
        if spec.type in (INT, INT_ARRAY) and bounded:
            descriptor.integer_range = [IntegerRange(
                from_value=int(spec.minimum), to_value=int(spec.maximum), step=0)]
        elif is_float and bounded:
            descriptor.floating_point_range = [FloatingPointRange(
                from_value=float(spec.minimum), to_value=float(spec.maximum), step=0.0)]
        try:
            values[spec.name] = node.declare_parameter(spec.name, spec.default,
                                                       descriptor).value
        except InvalidParameterTypeException as exc:
            errors.append(f"{spec.name}: have a value of the wrong type, need {spec.type} "
                          f"[{exc}]")
        except InvalidParameterValueException:
            # rclpy has no public accessor for the raw override that failed.
            override = getattr(node, "_parameter_overrides", {}).get(spec.name)
            have = override.value if override is not None else "?"
            errors.append(f"{spec.name}: have {have!r}, need {spec.range_text()}")
    return values, errors


def checked(node, values: Mapping[str, Any], errors: Sequence[str],
            specs: Sequence[ParamSpec] = PLANNER_PARAMETERS,
            validator: Optional[Validator] = None) -> dict[str, Any]:
    """The validated values of declare_parameters' result; ConfigError listing every
    problem (the declaration's and the validator's). Parameters named `*_topic` /
    `*_topics` are then checked as ROS topic names of `node` (check_topic_names)."""
    if errors:
        raise ConfigError("invalid parameters:\n  " + "\n  ".join(errors))
    if validator is None:
        validator = (validate_parameters if specs is PLANNER_PARAMETERS
                     else lambda v: validate(v, specs))
    values = validator(values)
    check_topic_names(node, {spec.name: values[spec.name] for spec in specs
                             if spec.name.endswith(TOPIC_SUFFIXES)})
    return values


# Parameters whose names end so hold topic names (a string, or an array of strings).
TOPIC_SUFFIXES = ("_topic", "_topics")


def check_topic_names(node, topics: Mapping[str, Any]) -> None:
    """ConfigError, one line per bad name, unless every topic name of `topics` (parameter
    name -> name or list of names) is valid for `node` by ROS's rules, after expansion
    against its namespace and remapping (node.resolve_topic_name). Empty names are left to
    the node's validator ("" may mean "derived", e.g. from a role name).

    rclpy would refuse such a name only when the subscription or publisher is created,
    with a multi-line InvalidTopicNameException or an RCLError that names no parameter.
    """
    from rclpy._rclpy_pybind11 import RCLError
    from rclpy.exceptions import NameValidationException

    errors = []
    for name, value in topics.items():
        items = [(name, value)] if isinstance(value, str) else [
            (f"{name}[{i}]", v) for i, v in enumerate(value)]
        for label, topic in items:
            if topic == "":
                continue  # unset: the node derives the topic (or its validator refuses "")
            try:
                node.resolve_topic_name(topic)
            except (RCLError, NameValidationException) as exc:
                # RCLError text: "failed to resolve name: <why>, at <rcl source file>".
                why = str(exc).split("failed to resolve name: ")[-1].split(", at /")[0]
                errors.append(f"{label}: have {topic!r}, need a valid ROS topic name "
                              f"({' '.join(why.split())})")
    if len(errors) == 1:
        raise ConfigError(errors[0])
    if errors:
        raise ConfigError("invalid topic names:\n  " + "\n  ".join(errors))


def declare_and_read(node, specs: Sequence[ParamSpec] = PLANNER_PARAMETERS,
                     validator: Optional[Validator] = None) -> dict[str, Any]:
    """Declare every parameter of `specs` on an rclpy node and return the validated values.

    validator: values -> normalised values (raises ConfigError); default: the planner's
    `validate_parameters` for the planner table, else `validate(values, specs)`.
    Raises ConfigError with have/need text for every problem.
    """
    values, errors = declare_parameters(node, specs)
    return checked(node, values, errors, specs, validator)


# --ros-args flags that take one value (skipped when looking for -p).
_ROS_ARG_FLAGS_WITH_VALUE = ("-r", "--remap", "--params-file", "--log-level", "-e",
                             "--enclave", "--log-config-file")


def check_parameter_overrides(args: Sequence[str], node_name: str,
                              specs: Sequence[ParamSpec]) -> None:
    """ConfigError for a name given with ``--ros-args -p name:=value`` (or ``--param``)
    that `specs` does not know, naming the closest known name: rcl would keep it as an
    override nobody declares, and the typo would be ignored without a word. Overrides
    addressed to another node (``other:name:=value``) and ROS's own parameters are left
    alone."""
    names = [spec.name for spec in specs]
    targets = {node_name}
    unknown = []
    in_ros_args = False
    tokens = iter(args)
    for token in tokens:
        if token == "--ros-args":
            in_ros_args = True
        elif token == "--":
            in_ros_args = False
        elif not in_ros_args:
            continue
        elif token in _ROS_ARG_FLAGS_WITH_VALUE:
            value = next(tokens, "")
            if token in ("-r", "--remap") and value.startswith("__node:="):
                targets.add(value.split(":=", 1)[1])
        elif token in ("-p", "--param"):
            rule = next(tokens, "")
            target, _, name = rule.split(":=", 1)[0].rpartition(":")
            if target and target not in targets:
                continue  # another node's parameter
            if name not in names and name not in ROS_ONLY_PARAMETERS and \
                    not name.startswith("qos_overrides."):
                unknown.append(f"unknown parameter {name!r} given with -p"
                               f"{closest_name(name, names)}")
    if unknown:
        raise ConfigError("; ".join(unknown))


def normalise_parameter_files(args: Sequence[str], node_name: str,
                              specs: Sequence[ParamSpec] = PLANNER_PARAMETERS) -> list[str]:
    """`args` with each `--params-file PATH` that rcl could not read as the schema means it
    replaced by a normalised copy (ints of float parameters written as floats).

    Unknown parameter names, wrong types and unreadable files raise ConfigError, with the
    closest known name for a typo; files that need no change are passed on as they are.
    """
    out = list(args)
    for i, arg in enumerate(out[:-1]):
        if arg != "--params-file":
            continue
        text = normalised_parameter_file(out[i + 1], node_name, specs)
        if text is not None:
            tmp = tempfile.NamedTemporaryFile("w", prefix=f"{node_name}_params_",
                                              suffix=".yaml", delete=False)
            with tmp:
                tmp.write(text)
            out[i + 1] = str(Path(tmp.name))
    return out
