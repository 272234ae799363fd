"""The replay command: rosbag2 bags through the planner core in stepped bag time, scored
against the bags' own odometry, with reports and an optional regression check.

Command: ``ros2 run alpamayo_ros replay`` / ``alpamayo-replay`` /
``python -m alpamayo_ros.tools.replay BAG [BAG ...] --params config/planner.yaml -o OUT``.

The parts: parameter file (core/parameter_file.py, validated by core/planner_params.py,
the node's rule), stepped engine (replay/engine.py), jobs and workers
(replay/jobs.py), scoring (replay/scoring.py), report (replay/report.py),
output files (replay/outputs.py), regression (tools/regression.py).

Navigation (Alpamayo 1.5): the bags' instructions on alpamayo/navigation are replayed;
``--nav-text TEXT`` forces one for every tick instead, ``--nav-compare`` also runs every
tick without it and direction-swapped (replay/navigation.py). With a model that takes
no instructions (R1) they are ignored with one warning, as the node ignores them.

Exit codes: 0 = success (or regression passed), 1 = regression against --golden,
2 = error (bad parameters or --nav-text, unreadable bag, missing topics, wrong types).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from alpamayo_ros.core.errors import AlpamayoError, ConfigError
from alpamayo_ros.core.navigation import check_prompt_text
from alpamayo_ros.core.parameter_file import read_parameter_file
from alpamayo_ros.core.planner_params import MODEL_BACKENDS, NODE_NAME, validate_parameters
from alpamayo_ros.bag import bag_io
from alpamayo_ros.replay.engine import BagJob, ReplayOptions
from alpamayo_ros.replay.jobs import make_jobs, run_jobs
from alpamayo_ros.replay.report import build_report, print_summary, report_json

EXIT_OK, EXIT_REGRESSION, EXIT_ERROR = 0, 1, 2


def resolve_parameters(flat: Mapping[str, Any], overrides: Mapping[str, Any] = {}) -> dict:
    """Validated, complete planner parameters of a parameter file with overrides applied
    (the node's rule: core.planner_params.validate_parameters)."""
    return validate_parameters({**flat, **overrides})


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"have {text!r}, need an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"have {value}, need an integer >= 1")
    return value


def build_arg_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="alpamayo-replay",
        description="Replay rosbag2 bags through the Alpamayo planner core in stepped bag "
                    "time; write a report (JSON, CSV, PNG) and an output bag, optionally "
                    "compare against a previous report.")
    p.add_argument("bags", nargs="+", type=Path, help="rosbag2 directories (mcap or sqlite3)")
    p.add_argument("--params", type=Path, required=True,
                   help="node parameter file (config/planner.yaml format)")
    p.add_argument("-o", "--output-dir", type=Path, required=True)
    p.add_argument("--node-name", default=NODE_NAME, help="section of the parameter file")
    p.add_argument("--namespace", default="/", help="resolves relative topic names")
    p.add_argument("--seed", type=int, help="override model.seed")
    p.add_argument("--rate", type=float, help="override rate_hz [Hz]")
    p.add_argument("--backend", choices=MODEL_BACKENDS, help="override model.backend")
    p.add_argument("--checkpoint", help="override model.checkpoint_dir")
    p.add_argument("--device", help="override model.device (cpu, cuda, cuda:N)")
    p.add_argument("--dtype", help="override model.dtype")
    p.add_argument("--max-delay", type=float, default=ReplayOptions.max_delay_s,
                   help="bound on receive time - header stamp a tick waits for [s]")
    p.add_argument("--max-forward-jump", type=float, default=ReplayOptions.max_forward_jump_s,
                   help="forward stamp jump that starts a new epoch [s]")
    p.add_argument("--jobs", type=_positive_int, default=1,
                   help="bags replayed in parallel processes (>= 1)")
    p.add_argument("--storage", default="mcap", choices=bag_io.STORAGE_IDS,
                   help="storage of the output bags")
    p.add_argument("--no-bag", action="store_true", help="do not write output bags")
    p.add_argument("--no-plot", action="store_true", help="do not write PNG plots")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--nav-text", metavar="TEXT",
                   help="navigation instruction for every tick instead of the bag's "
                        "(a counterfactual run; \"\" = none at all; Alpamayo 1.5)")
    p.add_argument("--nav-compare", action="store_true",
                   help="also run every tick with an instruction without it and with left "
                        "and right swapped; report how far the selected trajectories differ")
    from alpamayo_ros.tools.regression import add_arguments as add_regression_arguments
    add_regression_arguments(p)
    return p


def overrides_from_args(args: argparse.Namespace) -> dict:
    out: dict[str, Any] = {}
    for attr, name in (("seed", "model.seed"), ("rate", "rate_hz"), ("backend", "model.backend"),
                       ("checkpoint", "model.checkpoint_dir"), ("device", "model.device"),
                       ("dtype", "model.dtype")):
        value = getattr(args, attr)
        if value is not None:
            out[name] = value
    return out


Runner = Callable[[Sequence[BagJob], argparse.Namespace], list]


def _local_runner(jobs: Sequence[BagJob], args: argparse.Namespace) -> list:
    return run_jobs(jobs, args.jobs, progress=not args.quiet)


def run_cli(args: argparse.Namespace, runner: Runner = _local_runner) -> int:
    """The replay command after argument parsing; `runner` executes the bag jobs
    (local processes here, Ray actors in tools/ray_replay.py)."""
    try:
        values = resolve_parameters(read_parameter_file(args.params, args.node_name),
                                    overrides_from_args(args))
        nav_text = None
        if args.nav_text is not None:
            try:  # the node's check of an instruction's text
                nav_text = check_prompt_text(args.nav_text)
            except ValueError as exc:
                raise ConfigError(f"--nav-text: {exc}") from None
        options = ReplayOptions(max_delay_s=args.max_delay,
                                max_forward_jump_s=args.max_forward_jump,
                                namespace=args.namespace,
                                progress=not args.quiet and args.jobs <= 1,
                                nav_text=nav_text, nav_compare=args.nav_compare)
        if not args.no_bag:  # a message package the output bag needs must be installed
            from alpamayo_ros.replay.outputs import check_output_types
            check_output_types(values)
        args.output_dir.mkdir(parents=True, exist_ok=True)
        jobs = make_jobs(args.bags, values, options, args.output_dir, not args.no_bag,
                         not args.no_plot, args.storage)
        outcomes = runner(jobs, args)
    except (AlpamayoError, OSError) as exc:
        print(f"alpamayo-replay: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    report = build_report(values, options, outcomes)
    from alpamayo_ros.replay.outputs import write_csv, write_summary_plot
    (args.output_dir / "report.json").write_text(report_json(report))
    write_csv(args.output_dir / "ticks.csv", report)
    if not args.no_plot:
        write_summary_plot(args.output_dir / "summary.png", report)
    print_summary(report, args.output_dir)
    # One line per distinct warning (e.g. instructions an R1 checkpoint ignores).
    for warning in dict.fromkeys(w for bag in report["bags"] for w in bag.get("warnings", [])):
        print(f"alpamayo-replay: warning: {warning}", file=sys.stderr)
    code = EXIT_OK
    if report["aggregate"]["bags_with_errors"]:
        for bag in report["bags"]:
            if bag["status"] != "ok":
                # Bag errors name their bag already ("bags/awf: cannot open bag: ...").
                error = bag["error"]
                where = "" if error.startswith(str(bag["bag"])) else f"{bag['bag']}: "
                print(f"alpamayo-replay: error: {where}{error}", file=sys.stderr)
        code = EXIT_ERROR
    if args.golden is not None:
        from alpamayo_ros.tools.regression import run_from_args
        code = max(code, run_from_args(args, report))
    return code


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(build_arg_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
