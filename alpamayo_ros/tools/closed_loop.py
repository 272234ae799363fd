"""alpamayo-closed-loop: drive the CI simulator with a planner and the controller, report.

    alpamayo-closed-loop --planner route_oracle --duration 30 -o /tmp/cl
    alpamayo-closed-loop --planner alpamayo --checkpoint /tmp/tiny -o /tmp/cl_tiny
    alpamayo-closed-loop --planner route_oracle -o /tmp/cl2 --golden /tmp/cl/report.json
    alpamayo-closed-loop --suite DIR -o /tmp/suite --jobs 2        (tools/closed_loop_suite.py)
    alpamayo-closed-loop --from-bag --bag BRIDGE_BAG --route R.json -o /tmp/carla   (scores only)

Runs the processes of testbed/closed_loop_stack.sim_stack (carla_sim, planner_node or
route_oracle, controller_node: the executables and parameter files of
launch/sim_closed_loop.launch.py) for --duration seconds of sim time, in lockstep
(default) or real-time mode; the simulator records a bag (OUT/bag). Then it writes
OUT/report.json and OUT/report.png (sim/closed_loop_report.py) and, with --golden, compares
against a previous report.

Exit codes (those of alpamayo-replay): 0 = success (and no regression), 1 = regression
against --golden, 2 = error (a process failed or crashed, bad arguments, unreadable bag).
Process output goes to OUT/logs/<node>.log. No rclpy in this module: it only starts and
stops processes, and reads the bag afterwards.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import yaml

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.sim.closed_loop_report import (Tolerances, compare, compute_report,
                                                  load_report, read_bag, write_plot)
from alpamayo_ros.sim.route import Route
from alpamayo_ros.sim.road_renderer import raster_shape
from alpamayo_ros.testbed.closed_loop_stack import (PLANNERS, check_parameters, command_line,
                                                    config_dir, describe, sim_stack)
from alpamayo_ros.tools.replay import read_parameter_file

EXIT_OK, EXIT_REGRESSION, EXIT_ERROR = 0, 1, 2
# SIGINT -> exit; generous for a loaded 2-core machine (a Python node tears down slowly).
_STOP_TIMEOUT_S = 20.0


def _parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"need WIDTHxHEIGHT, have {text!r}") from None
    return w, h


def _number(minimum: float, exclusive: bool = False):
    """argparse type: a finite float >= minimum (> minimum when exclusive)."""
    need = f"a finite number {'>' if exclusive else '>='} {minimum:g}"

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"have {text!r}, need {need}") from None
        if not (math.isfinite(value) and (value > minimum if exclusive else value >= minimum)):
            raise argparse.ArgumentTypeError(f"have {text!r}, need {need}")
        return value

    return parse


class _Parser(argparse.ArgumentParser):
    """Usage errors in one line on stderr (exit 2), not argparse's usage block."""

    def error(self, message: str):
        self.exit(EXIT_ERROR, f"closed_loop: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="alpamayo-closed-loop", description=__doc__.splitlines()[0])
    p.add_argument("-o", "--output", type=Path, required=True, help="output directory (new)")
    p.add_argument("--planner", choices=PLANNERS, default="route_oracle")
    p.add_argument("--checkpoint", default="", help="checkpoint directory (--planner alpamayo)")
    p.add_argument("--device", default="cpu", help="torch device of --planner alpamayo")
    p.add_argument("--route", type=Path, default=None,
                   help="route JSON (docs/closed_loop.md); default: the package's route")
    p.add_argument("--duration", type=_number(0.0, exclusive=True), default=None,
                   help="sim seconds to drive (> 0; default 30; --suite: each route's own, "
                        "closed_loop_suite.route_duration)")
    p.add_argument("--mode", choices=("lockstep", "realtime"), default="lockstep")
    p.add_argument("--plan-rate", type=_number(0.0, exclusive=True), default=2.0,
                   help="planning rate [Hz]")
    p.add_argument("--initial-speed", type=_number(0.0), default=None,
                   help="start speed [m/s]; default: the route's first speed limit")
    p.add_argument("--camera-size", type=_parse_size, default=(320, 180), help="WxH [px]")
    p.add_argument("--plan-delay", type=_number(0.0), default=0.0,
                   help="route_oracle only: t0 of each plan this long before its tick [s]")
    p.add_argument("--no-gate", action="store_true",
                   help="synchronous simulator without the controller's lockstep gate")
    p.add_argument("--planner-param", action="append", default=[], metavar="NAME=VALUE",
                   help="extra planner parameter (YAML value), e.g. model.max_coc_tokens=16")
    p.add_argument("--navigation", choices=("auto", "on", "off"), default="auto",
                   help="run the route navigation node (alpamayo/navigation from the route "
                        "or the route file's instructions); auto = with --planner alpamayo")
    p.add_argument("--timeout", type=_number(0.0, exclusive=True), default=900.0,
                   help="wall seconds after which the run is aborted (exit 2)")
    p.add_argument("--golden", type=Path, default=None, help="previous report.json")
    p.add_argument("--from-bag", action="store_true",
                   help="run nothing: rebuild OUT/report.json from OUT/bag (same options as "
                        "the run) and compare with --golden")
    p.add_argument("--bag", type=Path, default=None,
                   help="with --from-bag: score this bag instead of OUT/bag (e.g. a "
                        "carla-ros-bridge recording; --route in map coordinates)")
    s = p.add_argument_group("suites (tools/closed_loop_suite.py)")
    s.add_argument("--suite", type=Path, default=None,
                   help="run every route file (*.json) of this folder; OUT/summary.*")
    s.add_argument("--jobs", type=int, default=1,
                   help="routes run in parallel, each worker on its own ROS domain")
    s.add_argument("--domain-ids", type=lambda text: [int(v) for v in text.split(",")],
                   default=None, help="ROS domain of each --jobs worker (comma separated); "
                   "default: ROS_DOMAIN_ID and the next ones")
    s.add_argument("--ray", action="store_true",
                   help="run the routes on a pool of Ray actors (tools/ray_closed_loop.py)")
    s.add_argument("--ray-address", default=None, help="Ray cluster ('auto'); default: local")
    s.add_argument("--ray-actors", type=int, default=None,
                   help="Ray actors (default: --jobs)")
    d = Tolerances()
    p.add_argument("--lateral-tolerance", type=_number(0.0), default=d.lateral_abs_m)
    p.add_argument("--relative-tolerance", type=_number(0.0), default=d.relative)
    return p


class Processes:
    """The run's processes, each in its own process group, output to a log file."""

    def __init__(self, log_dir: Path, env: dict) -> None:
        self.log_dir = log_dir
        self.env = env
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.exit_s: dict[str, float] = {}

    def start(self, name: str, argv: list[str], append: bool = False) -> subprocess.Popen:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{name}.log", "ab" if append else "wb") as log:
            proc = subprocess.Popen(argv, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((name, proc))
        return proc

    def first_failure(self) -> Optional[str]:
        for name, proc in self.procs:
            rc = proc.poll()
            if rc is not None and rc != 0:
                return f"{name} exited with {rc} (log: {self.log_dir / (name + '.log')})"
        return None

    def stop(self, timeout_s: float = _STOP_TIMEOUT_S,
             on_hang: Optional[Callable[[str, subprocess.Popen], None]] = None
             ) -> dict[str, Optional[int]]:
        """SIGINT to every group still running, SIGKILL to those still running timeout_s
        later (after on_hang(name, proc), e.g. to dump their stacks); return codes (None =
        had to be killed). `exit_s` gets the seconds from the SIGINT to the exit of each
        process that was signalled."""
        signalled = {}
        for name, proc in self.procs:
            if proc.poll() is None:
                _signal(proc, signal.SIGINT)
                signalled[name] = time.monotonic()
        codes: dict[str, Optional[int]] = {}
        self.exit_s = {}
        deadline = time.monotonic() + timeout_s
        while len(codes) < len(self.procs) and time.monotonic() < deadline:
            for name, proc in self.procs:
                if name not in codes and proc.poll() is not None:
                    codes[name] = proc.returncode
                    if name in signalled:
                        self.exit_s[name] = time.monotonic() - signalled[name]
            time.sleep(0.01)
        for name, proc in self.procs:
            if name not in codes:
                if on_hang is not None:
                    on_hang(name, proc)
                _signal(proc, signal.SIGKILL)
                proc.wait(_STOP_TIMEOUT_S)
                codes[name] = None
        return {name: codes[name] for name, _ in self.procs}


class PlannerHost:
    """A planner process kept across runs (the routes of a suite worker), so the model is
    loaded once: `ensure` starts it for the first run (and again only when its command
    line or environment changes, or it died), `close` stops it. Each run's simulator
    restarts sim time at 0: planner_node restarts its buffers on that backward jump of its
    clock (keeping what already arrived of the new time line) and its ticks on the new
    time line's multiples of its period (planner_node.TickPhase), so it plans every run as
    a fresh process would. The route oracle plans from its route file, so it is started
    with each run instead. Output: log_dir/<node>.log, appended over restarts, so
    `model_loads` counts every configure of every process it started."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = Path(log_dir)
        self._procs: Optional[Processes] = None
        self._key: Optional[tuple] = None
        self.log_path: Optional[Path] = None
        self.starts = 0

    @property
    def proc(self) -> Optional[subprocess.Popen]:
        return self._procs.procs[0][1] if self._procs is not None else None

    def ensure(self, spec, env: Optional[dict]) -> tuple[str, subprocess.Popen]:
        argv = command_line(spec)
        env = dict(os.environ if env is None else env)
        key = (tuple(argv), tuple(sorted(env.items())))
        if self.proc is not None and (self.proc.poll() is not None or key != self._key):
            self.close()
        if self._procs is None:
            self._procs = Processes(self.log_dir, env)
            self._procs.start(spec.node_name, argv, append=True)
            self._key = key
            self.log_path = self.log_dir / f"{spec.node_name}.log"
            self.starts += 1
        return spec.node_name, self.proc

    def model_loads(self) -> int:
        """Models the planner processes loaded so far, from their log: planner_node logs
        "configured: <model> ... loaded in" once per load."""
        if self.log_path is None or not self.log_path.is_file():
            return 0
        text = self.log_path.read_text(errors="replace")
        return sum("]: configured: " in line for line in text.splitlines())

    def close(self) -> Optional[int]:
        """Stop it as a run's processes are stopped; its exit code (None: killed)."""
        procs, self._procs = self._procs, None
        if procs is None:
            return 0
        return next(iter(procs.stop().values()))


def _signal(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_processes(specs, log_dir: Path, timeout_s: float, commands: Optional[dict] = None,
                  env: Optional[dict] = None, watch: Sequence[tuple] = ()
                  ) -> tuple[Optional[str], dict]:
    """Start the specs (the simulator first), wait until the simulator exits, stop the
    others. commands: node name -> argv replacing command_line(spec) (tests use it); env:
    the processes' environment (default: this one); watch: (name, process) already running
    (a PlannerHost's) that must not exit during the run.
    Returns (error or None, exit code per node; None = had to be killed)."""
    procs = Processes(log_dir, dict(os.environ if env is None else env))
    wall_start = time.monotonic()
    error = None
    try:
        for spec in specs:
            procs.start(spec.node_name, (commands or {}).get(spec.node_name)
                        or command_line(spec))
        simulator = procs.procs[0][1]
        while simulator.poll() is None:
            error = procs.first_failure() or next(
                (f"{name} exited with {proc.poll()} during the run" for name, proc in watch
                 if proc.poll() is not None), None)
            if error is not None:
                break
            if time.monotonic() - wall_start > timeout_s:
                error = f"run did not finish within {timeout_s:g} s (wall)"
                break
            time.sleep(0.1)
        if error is None:
            error = procs.first_failure()
    finally:
        codes = procs.stop()
    crashed = {n: c for n, c in codes.items() if c != 0}
    if error is None and crashed:
        error = f"processes did not shut down cleanly: {crashed}"
    return error, codes


def report_from_bag(out: Path, route: Route, specs, *, planning_period_s: float, gate: bool,
                    run_info: dict, bag: Optional[Path] = None) -> dict:
    """report.json content of the bag `bag` (default out/bag; see
    sim/closed_loop_report.py)."""
    record = read_bag(bag if bag is not None else out / "bag")
    controller = read_parameter_file(config_dir() / "controller.yaml", specs[2].node_name)
    return compute_report(record, route,
                          rear_axle_offset_x=float(controller["vehicle.rear_axle_offset_xyz"][0]),
                          planning_period_s=planning_period_s, lockstep=gate,
                          max_plan_age_s=float(controller["plan.max_age"]), run=run_info)


def _prepare(args: argparse.Namespace) -> tuple[Route, list, float]:
    """(route, process specs, initial speed) of the run, every argument, the route file and
    each node's parameters checked first (nothing is started or written before);
    ConfigError with the first problem on one line."""
    out: Path = args.output
    if args.bag is not None and not args.from_bag:
        raise ConfigError("--bag needs --from-bag")
    if args.from_bag:
        bag = args.bag if args.bag is not None else out / "bag"
        if not bag.is_dir():
            raise ConfigError(f"--from-bag needs the bag {bag}")
    elif out.exists() and not out.is_dir():
        raise ConfigError(f"-o: {out} is not a directory")
    elif out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"{out} exists and is not empty")
    else:
        blocked = next((p for p in out.parents if p.exists() and not p.is_dir()), None)
        if blocked is not None:
            raise ConfigError(f"-o: cannot create {out}: {blocked} is a file")
    route = Route.load(args.route)
    raster_shape(route)  # the simulator's road raster must fit in memory
    if args.planner == "alpamayo" and not args.checkpoint:
        raise ConfigError("--planner alpamayo needs --checkpoint")
    if args.plan_delay > 0 and args.planner != "route_oracle":
        raise ConfigError("--plan-delay needs --planner route_oracle")
    lockstep = args.mode == "lockstep"
    initial_speed = (args.initial_speed if args.initial_speed is not None
                     else float(route.segments[0].speed_limit))
    width, height = args.camera_size
    sim = {"duration": args.duration, "record_path": str(out / "bag"),
           "initial_speed": initial_speed, "camera_width": width, "camera_height": height,
           "route_file": str(args.route.resolve()) if args.route else ""}
    planner_extra = ({"route_file": sim["route_file"], "plan_delay": args.plan_delay}
                     if args.planner == "route_oracle" else {})
    for item in args.planner_param:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ConfigError(f"--planner-param needs NAME=VALUE, have {item!r}")
        try:
            planner_extra[name] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--planner-param {name}: have {value!r}, need a YAML value "
                              f"({' '.join(str(exc).split())})") from None
    specs = sim_stack(args.planner, rate_hz=args.plan_rate, lockstep=lockstep,
                      checkpoint=str(Path(args.checkpoint).resolve()) if args.checkpoint else "",
                      device=args.device, sim=sim, planner_extra=planner_extra,
                      controller_extra={"lockstep.enabled": lockstep and not args.no_gate,
                                        "diagnostics.period": 0.5},
                      navigation={"auto": None, "on": True, "off": False}[args.navigation])
    for spec in specs:
        check_parameters(spec)
    return route, specs, initial_speed


def run(args: argparse.Namespace, env: Optional[dict] = None,
        planner_host: Optional[PlannerHost] = None) -> int:
    """One run (or, with --suite, a suite); env: the processes' environment (default:
    this process's); planner_host: keeps the planner process across runs (suites)."""
    out: Path = args.output
    args.duration_given = args.duration
    if args.duration is None:
        args.duration = 30.0
    if args.suite is not None:
        from alpamayo_ros.tools import closed_loop_suite
        if args.jobs < 1:
            print(f"closed_loop: error: --jobs: have {args.jobs}, need >= 1", file=sys.stderr)
            return EXIT_ERROR
        runner = None
        if args.ray:
            from alpamayo_ros.tools import ray_closed_loop
            runner = ray_closed_loop.runner_from_args(args)
        return closed_loop_suite.run_suite(args, runner)
    bag = args.bag if args.bag is not None else out / "bag"
    try:
        route, specs, initial_speed = _prepare(args)
        out.mkdir(parents=True, exist_ok=True)
    except (ConfigError, OSError) as exc:
        print(f"closed_loop: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return EXIT_ERROR
    gate = args.mode == "lockstep" and not args.no_gate
    wall_start = time.monotonic()
    error, codes = None, {}
    if not args.from_bag:
        start, watch = specs, ()
        if planner_host is not None and args.planner != "route_oracle":
            start, watch = [specs[0], specs[2]], (planner_host.ensure(specs[1], env),)
        error, codes = run_processes(start, out / "logs", args.timeout, env=env, watch=watch)
    wall = time.monotonic() - wall_start
    run_info = {"planner": args.planner, "mode": args.mode, "lockstep_gate": gate,
                "duration_s": args.duration, "plan_rate_hz": args.plan_rate,
                "initial_speed_mps": initial_speed, "plan_delay_s": args.plan_delay,
                "checkpoint": args.checkpoint, "processes": describe(specs),
                "exit_codes": codes}
    try:
        report = report_from_bag(out, route, specs, planning_period_s=1.0 / args.plan_rate,
                                 gate=gate, run_info=run_info, bag=bag)
    except Exception as exc:  # an unreadable or empty bag: the run failed
        print(f"closed_loop: error: cannot build the report from {bag}: {exc}"
              + (f" ({error})" if error else ""), file=sys.stderr)
        return EXIT_ERROR
    if args.from_bag and (out / "report.json").is_file():
        previous = json.loads((out / "report.json").read_text())
        report["run"] = previous.get("run", report["run"])
        wall = previous.get("timings", {}).get("wall_s", wall)
    report["timings"] = {"wall_s": round(wall, 3)}
    report["error"] = error
    (out / "report.json").write_text(json.dumps(report, indent=1))
    write_plot(report, route, out / "report.png")
    m = report["metrics"]
    lb = report["scores"]["leaderboard"]
    print(f"closed_loop: DS {lb['driving_score']:.2f} = RC {lb['route_completion']:.2f} x IP "
          f"{lb['infraction_penalty']:.3f} ({lb['status']}), infractions "
          f"{lb['infractions_total']}, collisions {len(lb['collisions'])}, lane invasions "
          f"{lb['lane_invasions']}")
    print(f"closed_loop: {args.planner} {args.mode}, {m['duration_s']:.1f} s sim in {wall:.1f} s "
          f"wall: lateral RMS {m['lateral_deviation_rms_m']:.3f} m (max "
          f"{m['lateral_deviation_max_m']:.3f}), speed error RMS {m['speed_error_rms_mps']:.3f} "
          f"m/s, progress {m['route_progress_m']:.1f} m, plans {m['plans_ok']}/"
          f"{m['plans_total']} OK, stops {len(m['stops'])}, off-road {m['off_road_events']}; "
          f"{out / 'report.json'}")
    if error is not None:
        print(f"closed_loop: error: {error}", file=sys.stderr)
        return EXIT_ERROR
    if args.golden is not None:
        return print_verdict(lambda: compare(report, load_report(args.golden),
                                             tolerances(args)))
    return EXIT_OK


def tolerances(args: argparse.Namespace) -> Tolerances:
    return Tolerances(lateral_abs_m=args.lateral_tolerance, relative=args.relative_tolerance)


def print_verdict(judge: Callable[[], tuple[list, list]]) -> int:
    """Print a golden comparison (judge: () -> (regressions, notes), ValueError when it
    cannot compare); its exit code."""
    try:
        regressions, notes = judge()
    except ValueError as exc:
        print(f"closed_loop: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    for line in regressions:
        print(f"REGRESSION  {line}")
    for line in notes:
        print(f"note        {line}")
    print("PASS" if not regressions else f"FAIL ({len(regressions)} regressions)")
    return EXIT_REGRESSION if regressions else EXIT_OK


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
