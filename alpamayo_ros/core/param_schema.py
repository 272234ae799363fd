"""Parameter schemas: a table of ParamSpec rows and the one validator that checks values
against it.

A schema row names a parameter, its type, default, description and allowed values. From
the table come the validation of parameter files and of the node's ROS parameters (both
through `validate`), the self-validation of the core's settings types (`check_value` on
one field), the rclpy declarations (alpamayo_ros.ros.params) and the Markdown tables of
docs/. No rclpy and no project imports here, so every layer can use it.

Value rules (the same for YAML files, ROS parameters and Python callers): an int is
accepted where a float is declared (people write `rate_hz: 2`), never a bool where a
number is declared; float parameters come back as float and arrays as lists.
"""
from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from alpamayo_ros.core.errors import ConfigError

# Value types a parameter may have (the ROS parameter types the nodes use).
BOOL = "bool"
INT = "int"
FLOAT = "float"
STRING = "string"
INT_ARRAY = "int[]"
FLOAT_ARRAY = "float[]"
STRING_ARRAY = "string[]"

PY_TYPES = {BOOL: bool, INT: int, FLOAT: float, STRING: str}
ARRAY_ITEM = {INT_ARRAY: INT, FLOAT_ARRAY: FLOAT, STRING_ARRAY: STRING}

CrossChecks = Callable[[Mapping[str, Any]], list]


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: name, type, default, description and allowed values.

    minimum/maximum bound numeric values (inclusive; for arrays, every element).
    choices lists the allowed strings (for string arrays, every element).
    length fixes the length of an array parameter; length_range = (lo, hi) bounds it
    instead (inclusive).
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
    length_range: Optional[tuple[int, int]] = None

    def range_text(self) -> str:
        """Human-readable allowed values, for docs and error messages."""
        parts = []
        if self.minimum is not None or self.maximum is not None:
            lo = "-inf" if self.minimum is None else format_value(self.minimum)
            hi = "inf" if self.maximum is None else format_value(self.maximum)
            parts.append(f"[{lo}, {hi}]")
        if self.choices:
            parts.append(" | ".join(f'"{c}"' for c in self.choices))
        if self.length is not None:
            parts.append(f"length {self.length}")
        if self.length_range is not None:
            parts.append(f"length {self.length_range[0]} to {self.length_range[1]}")
        return "; ".join(parts)


def format_value(value: Any) -> str:
    """A value as written in docs and YAML (true/false, quoted strings, [lists])."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return f'"{value}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    return str(value)


def defaults(specs: Sequence[ParamSpec]) -> dict[str, Any]:
    """Default value of every parameter (fresh lists, safe to mutate)."""
    return {p.name: (list(p.default) if isinstance(p.default, list) else p.default)
            for p in specs}


def _check_scalar(spec: ParamSpec, item_type: str, value: Any, where: str) -> list[str]:
    py_type = PY_TYPES[item_type]
    # bool is an int subclass in Python: reject it explicitly for numeric parameters.
    ok = isinstance(value, py_type) and not (py_type is not bool and isinstance(value, bool))
    if item_type == FLOAT and isinstance(value, int) and not isinstance(value, bool):
        ok = True  # an int where a float is declared: `rate_hz: 2` means 2.0
    if not ok:
        return [f"{where}: have {type(value).__name__} {value!r}, need {item_type}"]
    errors = []
    if item_type in (INT, FLOAT):
        if item_type == FLOAT and not math.isfinite(value):
            errors.append(f"{where}: have {value!r}, need a finite number")
        if spec.minimum is not None and value < spec.minimum:
            errors.append(f"{where}: have {value!r}, need >= {format_value(spec.minimum)}")
        if spec.maximum is not None and value > spec.maximum:
            errors.append(f"{where}: have {value!r}, need <= {format_value(spec.maximum)}")
    if item_type == STRING and spec.choices and value not in spec.choices:
        errors.append(f"{where}: have {value!r}, need one of {', '.join(spec.choices)}")
    return errors


def check_value(spec: ParamSpec, value: Any, where: Optional[str] = None
                ) -> tuple[Any, list[str]]:
    """(normalised value, problems) of one value against its row.

    Normalised: float parameters as float, float arrays as lists of float, other arrays as
    lists. `where` names the value in the problems (default: the parameter name).
    """
    where = where or spec.name
    if spec.type in ARRAY_ITEM:
        if not isinstance(value, (list, tuple)):
            return value, [f"{where}: have {type(value).__name__} {value!r}, need {spec.type}"]
        value = list(value)
        errors = []
        if spec.length is not None and len(value) != spec.length:
            errors.append(f"{where}: have {len(value)} entries, need {spec.length}")
        if spec.length_range is not None and not (
                spec.length_range[0] <= len(value) <= spec.length_range[1]):
            errors.append(f"{where}: have {len(value)} entries, need "
                          f"{spec.length_range[0]} to {spec.length_range[1]}")
        for i, item in enumerate(value):
            errors += _check_scalar(spec, ARRAY_ITEM[spec.type], item, f"{where}[{i}]")
        if spec.type == FLOAT_ARRAY and not errors:
            value = [float(v) for v in value]
        return value, errors
    errors = _check_scalar(spec, spec.type, value, where)
    if spec.type == FLOAT and not errors:
        value = float(value)
    return value, errors


def check_fields(obj: Any, rows: Mapping[str, ParamSpec]) -> list[str]:
    """Problems of obj.<field> against rows[field], for settings types that validate
    themselves by their parameter rows (PlannerConfig, InferenceOptions)."""
    errors = []
    for name, spec in rows.items():
        errors += check_value(spec, getattr(obj, name), where=name)[1]
    return errors


def closest_name(name: str, known: Sequence[str]) -> str:
    """' (did you mean 'x'?)' for the closest known name, or '' when none is close."""
    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    return f" (did you mean {match[0]!r}?)" if match else ""


def validate(values: Mapping[str, Any], specs: Sequence[ParamSpec],
             cross_checks: Optional[CrossChecks] = None) -> dict[str, Any]:
    """Check types, ranges, choices, lengths and cross-parameter rules.

    values: parameter name -> value; missing names take their default, unknown names are
    an error (naming the closest known name). Returns the complete, normalised mapping.
    Raises ConfigError listing every problem (have/need) at once.
    """
    names = [s.name for s in specs]
    errors = [f"unknown parameter {name!r}{closest_name(name, names)}"
              for name in sorted(set(values) - set(names))]
    out = defaults(specs)
    for spec in specs:
        if spec.name in values:
            out[spec.name], problems = check_value(spec, values[spec.name])
            errors += problems
    if not errors and cross_checks is not None:
        errors += cross_checks(out)
    if errors:
        raise ConfigError("invalid parameters:\n  " + "\n  ".join(errors))
    return out


# ---------------------------------------------------------------- generated docs tables
def docs_markers(generator: str) -> tuple[str, str]:
    """(begin, end) markers around a generated table; `generator` is the command."""
    return (f"<!-- BEGIN GENERATED PARAMETER TABLE ({generator}) -->",
            "<!-- END GENERATED PARAMETER TABLE -->")


def render_markdown_table(specs: Sequence[ParamSpec]) -> str:
    """The Markdown table of a schema (name, type, default, allowed, description)."""
    lines = ["| name | type | default | allowed | description |",
             "|---|---|---|---|---|"]
    for p in specs:
        cells = [f"`{p.name}`", p.type, f"`{format_value(p.default)}`", p.range_text(),
                 p.description]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def update_docs(path: Path, specs: Sequence[ParamSpec], generator: str) -> bool:
    """Rewrite the generated table of `path` between its markers; True when it changed."""
    begin_marker, end_marker = docs_markers(generator)
    text = path.read_text()
    begin, end = text.find(begin_marker), text.find(end_marker)
    if begin < 0 or end < begin:
        raise ConfigError(f"{path}: markers {begin_marker!r} ... {end_marker!r} not found")
    section = f"{begin_marker}\n{render_markdown_table(specs)}\n{end_marker}"
    new = text[:begin] + section + text[end + len(end_marker):]
    if new != text:
        path.write_text(new)
    return new != text


def docs_main(argv: Optional[Sequence[str]], specs: Sequence[ParamSpec], docs_path: Path,
              generator: str, description: str) -> int:
    """The `--write-docs [PATH]` command of a parameter table's module: rewrite the
    generated table of docs_path (or PATH); without it, print the table."""
    import argparse
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--write-docs", type=Path, nargs="?", const=docs_path,
                        help=f"rewrite the generated table in {docs_path.name}")
    args = parser.parse_args(argv)
    if args.write_docs:
        changed = update_docs(args.write_docs, specs, generator)
        print(f"{args.write_docs}: {'updated' if changed else 'up to date'}")
    else:
        print(render_markdown_table(specs))
    return 0


def param_literal(value: Any) -> str:
    """A parameter value as the YAML literal that ``--ros-args -p name:=value`` parses back
    to the same type (strings quoted, so "1", "true" or "" stay strings)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(param_literal(v) for v in value) + "]"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)
