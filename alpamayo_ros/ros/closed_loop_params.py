"""The closed-loop nodes' parameters on rclpy: declared and validated from their schema
tables (alpamayo_ros.sim.closed_loop_params, ROS-free), and the generated tables of
docs/closed_loop.md (`python -m alpamayo_ros.ros.closed_loop_params --write-docs`;
test_closed_loop_config.py fails while they are out of date).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from alpamayo_ros.core.param_schema import (CrossChecks, ParamSpec, defaults,
                                            render_markdown_table, validate)
from alpamayo_ros.ros import params as ros_params
from alpamayo_ros.sim.closed_loop_params import (CONTROLLER_FIELDS, CONTROLLER_PARAMETERS,
                                                 NODE_PARAMETERS, ORACLE_PARAMETERS, ROLE_NAME,
                                                 SIM_PARAMETERS, controller_config,
                                                 controller_cross_checks, sim_cross_checks,
                                                 topic_names)

__all__ = ["CONTROLLER_PARAMETERS", "SIM_PARAMETERS", "ORACLE_PARAMETERS", "NODE_PARAMETERS",
           "CONTROLLER_FIELDS", "ROLE_NAME", "ParamSpec", "controller_config",
           "controller_cross_checks", "sim_cross_checks", "declare_and_read", "defaults",
           "validate", "topic_names"]


def declare_and_read(node, specs: Sequence[ParamSpec],
                     cross_checks: Optional[CrossChecks] = None) -> dict[str, Any]:
    """Declare `specs` on the node and return the values validated with `cross_checks`."""
    return ros_params.declare_and_read(
        node, specs, lambda values: validate(values, specs, cross_checks))


# ---------------------------------------------------------------- docs/closed_loop.md
DOCS_TABLES = {"controller": CONTROLLER_PARAMETERS, "carla_sim": SIM_PARAMETERS,
               "route_oracle": ORACLE_PARAMETERS}
DOCS_PATH = Path(__file__).resolve().parents[2] / "docs" / "closed_loop.md"


def _markers(name: str) -> tuple[str, str]:
    return (f"<!-- BEGIN GENERATED {name} PARAMETERS (python -m "
            f"alpamayo_ros.ros.closed_loop_params --write-docs) -->",
            f"<!-- END GENERATED {name} PARAMETERS -->")


def render_docs(text: str) -> str:
    """`text` with every generated table replaced by the current schema's."""
    for name, specs in DOCS_TABLES.items():
        begin, end = _markers(name)
        i, j = text.find(begin), text.find(end)
        if i < 0 or j < i:
            raise ValueError(f"markers of the {name} table not found")
        text = text[:i] + begin + "\n" + render_markdown_table(specs) + "\n" + text[j:]
    return text


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write-docs", type=Path, nargs="?", const=DOCS_PATH)
    args = parser.parse_args(argv)
    if args.write_docs:
        old = args.write_docs.read_text()
        new = render_docs(old)
        if new != old:
            args.write_docs.write_text(new)
        print(f"{args.write_docs}: {'updated' if new != old else 'up to date'}")
        return 0
    for name, specs in DOCS_TABLES.items():
        print(f"## {name}\n\n{render_markdown_table(specs)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
