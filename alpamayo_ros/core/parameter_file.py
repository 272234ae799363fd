"""ROS 2 parameter files (YAML) read without ROS: the sections that apply to a node, as
flat dotted names, and a copy normalised to what rcl can parse.

A section applies to node N when its key is "/**", "**", "N", "/N" or "/<namespace>/N";
later (more specific) sections override "/**". Nested groups become dotted names
(core.frame_tolerance), as rcl reads them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.param_schema import FLOAT, FLOAT_ARRAY, ParamSpec, closest_name

PARAMETERS_KEY = "ros__parameters"


def _load(path: Path | str) -> Mapping:
    import yaml
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read parameter file: {exc}") from exc
    if not isinstance(doc, Mapping):
        raise ConfigError(f"{path}: need a mapping '<node>: ros__parameters: ...', "
                          f"have {type(doc).__name__}")
    return doc


def _sections(doc: Mapping, node_name: str) -> tuple[list, list]:
    """(generic, specific) section keys of `doc` that apply to `node_name`."""
    generic = [k for k in doc if str(k) in ("/**", "**")]
    specific = [k for k in doc if str(k).rstrip("/").split("/")[-1] == node_name]
    return generic, specific


def _leaves(tree: Mapping, prefix: str = "") -> Iterator[tuple[str, Mapping, Any]]:
    """(dotted name, parent mapping, key) of every leaf value of a parameter tree."""
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _leaves(value, name + ".")
        else:
            yield name, tree, key


def flatten_parameters(tree: Mapping) -> dict[str, Any]:
    """A nested ros__parameters mapping as dotted names -> values."""
    return {name: parent[key] for name, parent, key in _leaves(tree)}


def _parameter_trees(path: Path | str, doc: Mapping, node_name: str) -> list[Mapping]:
    generic, specific = _sections(doc, node_name)
    if not generic and not specific:
        raise ConfigError(f"{path}: no section for node {node_name!r} (or '/**'); "
                          f"have {sorted(map(str, doc))}")
    trees = []
    for key in generic + specific:
        section = doc[key]
        if not isinstance(section, Mapping) or PARAMETERS_KEY not in section:
            raise ConfigError(f"{path}: section {key!r} needs a '{PARAMETERS_KEY}' mapping")
        trees.append(section[PARAMETERS_KEY] or {})
    return trees


def read_parameter_file(path: Path | str, node_name: str) -> dict[str, Any]:
    """Flat parameters (dotted names -> values) of `node_name` in a ROS 2 parameter file.
    Raises ConfigError for an unreadable file or one without a section for the node."""
    flat: dict[str, Any] = {}
    for tree in _parameter_trees(path, _load(path), node_name):
        flat.update(flatten_parameters(tree))
    return flat


def normalised_parameter_file(path: Path | str, node_name: str, specs: Sequence[ParamSpec],
                              ignore: Sequence[str] = ("use_sim_time",)) -> str | None:
    """YAML text of the file with the ints of float parameters written as floats, or None
    when rcl can read the file as it is.

    rcl types a value by how it is written and refuses arrays that mix ints and floats;
    the schema accepts an int where a float is declared, so `[-1.4, 0, 0]` becomes
    `[-1.4, 0.0, 0.0]`. Names of the node's sections that the schema does not know raise
    ConfigError naming the closest known name (a typo must not be silently ignored).
    """
    import yaml
    doc = _load(path)
    by_name = {s.name: s for s in specs}
    unknown, changed = [], False
    for tree in _parameter_trees(path, doc, node_name):
        for name, parent, key in _leaves(tree):
            spec = by_name.get(name)
            if spec is None:
                if name not in ignore:
                    unknown.append(f"unknown parameter {name!r}"
                                   f"{closest_name(name, list(by_name))}")
                continue
            value = parent[key]
            if spec.type == FLOAT and _is_int(value):
                parent[key], changed = float(value), True
            elif spec.type == FLOAT_ARRAY and isinstance(value, list) and \
                    any(_is_int(v) for v in value):
                parent[key], changed = [float(v) if _is_int(v) else v for v in value], True
    if unknown:
        raise ConfigError(f"{path}: " + "; ".join(unknown))
    return yaml.safe_dump(doc, sort_keys=False) if changed else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
