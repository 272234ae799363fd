"""Route suites for alpamayo-closed-loop: every route file of a folder, one run each,
scored and summarised as the CARLA leaderboard does.

    alpamayo-closed-loop --suite DIR -o OUT [--jobs N] [--golden GOLDEN_OUT/summary.json]

Each route runs exactly as a single `alpamayo-closed-loop --route FILE` run (`run_route_job`,
the picklable job every runner executes): OUT/<route name>/ holds its bag, report.json,
report.png and logs. Its duration is --duration when given, else `route_duration` (the
time a car needs along the route's reachable speed profile, plus a margin). Then
OUT/summary.json, OUT/summary.csv and OUT/summary.md list per route: driving score, route
completion, infraction penalty, infractions (count and per km), collisions, lane
invasions, off-lane percentage, comfort, efficiency, median plan age and how the route
ended; and the suite's means (sim/scoring.suite_means: DS, RC, IP averaged over routes,
infractions per driven km).

Runners: in order (--jobs 1), in N spawned worker processes (--jobs N), each worker on
its own ROS domain (--domain-ids, default: ROS_DOMAIN_ID of the caller and the next ones),
so parallel stacks never see each other; or a pool of Ray actors
(tools/ray_closed_loop.py). Each runner keeps one planner process (and so one loaded
model) for all the routes it runs (closed_loop.PlannerHost); simulator and controller are
started per route. --golden compares with a previous suite's summary.json and,
where the golden folder has them, each route's report.json (sim/closed_loop_report.compare):
exit 0 pass, 1 regression, 2 error (a route failed, the suites differ in routes, an
unreadable golden).
"""
from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import time
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import numpy as np

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.sim import scoring
from alpamayo_ros.sim.closed_loop_report import (TARGET_ACCELERATION, TARGET_DECELERATION,
                                                  Tolerances, compare, load_report)
from alpamayo_ros.sim.route import Route

SUMMARY_FORMAT = "alpamayo_closed_loop_suite/1"
SUITE_DIR = Path(__file__).resolve().parents[1] / "sim" / "data" / "suite"
# Seconds added to the time the reachable speed profile needs (start-up, the last metres).
DURATION_MARGIN_S = 6.0
EXIT_OK, EXIT_REGRESSION, EXIT_ERROR = 0, 1, 2
COLUMNS = ("route", "driving_score", "route_completion", "infraction_penalty",
           "infractions", "infractions_per_km", "collisions", "lane_invasions",
           "off_lane_percent", "comfort_percent", "efficiency_percent", "plan_age_p50_s",
           "lateral_rms_m", "status", "exit_code")


@dataclass(frozen=True)
class RouteJob:
    """One route of a suite: route file, output folder, the shared closed-loop arguments
    (argv without -o / --route / --golden) and the duration [s]."""

    route: str
    output: str
    argv: tuple[str, ...]
    duration_s: float


def suite_routes(directory: Path) -> list[Path]:
    """The route files (*.json) of a suite folder, by name; ConfigError when none."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"--suite: {directory} is not a directory")
    routes = sorted(directory.glob("*.json"))
    if not routes:
        raise ConfigError(f"--suite: {directory} has no route files (*.json)")
    return routes


def route_duration(route: Route) -> float:
    """Sim seconds to drive the route: along the reachable speed profile from its first
    limit (as the tool starts the car) to the stop, plus DURATION_MARGIN_S, in 0.5 s."""
    v = scoring.reachable_speed(route, route.s, 0.0, route.segments[0].speed_limit,
                                TARGET_ACCELERATION, TARGET_DECELERATION)
    ds = np.diff(route.s)
    mean_v = np.maximum(0.5 * (v[1:] + v[:-1]), 0.5)  # the last metres: at least 0.5 m/s
    seconds = float(np.sum(ds / mean_v)) + DURATION_MARGIN_S
    return math.ceil(seconds * 2.0) / 2.0


def make_jobs(routes: Sequence[Path], out: Path, argv: Sequence[str],
              duration_s: Optional[float]) -> list[RouteJob]:
    jobs, names = [], set()
    for path in routes:
        route = Route.load(path)
        name = path.stem
        if name in names:
            raise ConfigError(f"--suite: two routes named {name!r}")
        names.add(name)
        jobs.append(RouteJob(str(path.resolve()), str(out / name), tuple(argv),
                             duration_s if duration_s is not None else route_duration(route)))
    return jobs


def run_route_job(job: RouteJob, domain_id: Optional[int] = None,
                  planner_host=None) -> dict:
    """Run one route with alpamayo-closed-loop's run() on ROS domain `domain_id` (None:
    this process's), with the planner process of `planner_host` (closed_loop.PlannerHost,
    kept across the routes of a worker; None: a planner process for this route only); its
    summary row, the exit code, the tool's output and which planner process planned."""
    from alpamayo_ros.tools import closed_loop
    env = dict(os.environ)
    if domain_id is not None:
        env["ROS_DOMAIN_ID"] = str(domain_id)
    argv = ["-o", job.output, "--route", job.route, "--duration", f"{job.duration_s:g}",
            *job.argv]
    buffer = io.StringIO()
    with redirect_stdout(buffer), redirect_stderr(buffer):
        try:
            code = closed_loop.run(closed_loop.build_parser().parse_args(argv), env=env,
                                   planner_host=planner_host)
        except SystemExit as exc:  # argparse: bad shared arguments
            code = int(exc.code or EXIT_ERROR)
    report_path = Path(job.output) / "report.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() else None
    host_proc = planner_host.proc if planner_host is not None else None
    return {"route": Path(job.route).stem, "exit_code": code,
            "output": buffer.getvalue()[-4000:],
            "row": summary_row(Path(job.route).stem, report, code),
            "planner": {"pid": host_proc.pid if host_proc is not None else None,
                        "starts": planner_host.starts if planner_host is not None else None,
                        "model_loads": (planner_host.model_loads()
                                        if planner_host is not None else None)}}


def planner_host_for(job: RouteJob, tag: str):
    """A PlannerHost logging to <suite output>/logs/planner_<tag>/."""
    from alpamayo_ros.tools.closed_loop import PlannerHost
    return PlannerHost(Path(job.output).parent / "logs" / f"planner_{tag}")


def summary_row(name: str, report: Optional[Mapping], exit_code: int) -> dict:
    """One route's line of the summary (None scores where the run left no report)."""
    row: dict[str, Any] = dict.fromkeys(COLUMNS)
    row.update(route=name, exit_code=exit_code, status="no report")
    if not report or "scores" not in report:
        return row
    lb = report["scores"]["leaderboard"]
    comfort = report["scores"]["comfort"]
    row.update(driving_score=lb["driving_score"], route_completion=lb["route_completion"],
               infraction_penalty=lb["infraction_penalty"],
               infractions=lb["infractions_total"],
               infractions_per_km=lb["infractions_per_km"],
               collisions=len(lb["collisions"]), lane_invasions=lb["lane_invasions"],
               off_lane_percent=lb["off_lane_percent"],
               comfort_percent=comfort["comfort_percent"] if comfort else None,
               efficiency_percent=report["scores"]["efficiency_percent"],
               plan_age_p50_s=report["scores"]["plan_age_p50_s"],
               lateral_rms_m=report["metrics"]["lateral_deviation_rms_m"],
               status=lb["status"])
    row["route_length_m"] = lb["route_length_m"]
    row["infractions_total"] = lb["infractions_total"]
    row["odometry_sha256"] = report["metrics"]["odometry_sha256"]
    return row


def summarise(rows: Sequence[Mapping], run_info: Mapping) -> dict:
    scored = [r for r in rows if r["driving_score"] is not None]
    means = scoring.suite_means(scored) if len(scored) == len(rows) and rows else {}
    for key in ("comfort_percent", "efficiency_percent", "plan_age_p50_s"):
        values = [r[key] for r in scored if r[key] is not None]
        if means and values:
            means[key] = float(np.mean(values))
    return {"format": SUMMARY_FORMAT, "run": dict(run_info), "routes": list(rows),
            "means": means}


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}" if abs(value) < 1e5 else f"{value:.3g}"
    return str(value)


def write_summary(out: Path, summary: Mapping) -> None:
    """summary.json, summary.csv (one line per route, then the means) and summary.md."""
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for row in summary["routes"]:
            writer.writerow([row.get(c) for c in COLUMNS])
        means = summary["means"]
        writer.writerow(["mean"] + [means.get(c) for c in COLUMNS[1:4]]
                        + [means.get("infractions_total"), means.get("infractions_per_km")]
                        + [None] * 3 + [means.get(c) for c in ("comfort_percent",
                                                               "efficiency_percent",
                                                               "plan_age_p50_s")]
                        + [None] * 3)
    header = ["route", "DS", "RC", "IP", "infractions", "per km", "collisions",
              "lane inv.", "off-lane %", "comfort %", "efficiency %", "plan age p50 s",
              "lateral RMS m", "status"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in summary["routes"]:
        lines.append("| " + " | ".join(_fmt(row.get(c)) for c in COLUMNS[:-1]) + " |")
    m = summary["means"]
    if m:
        lines.append("| **mean** | " + " | ".join(_fmt(m.get(c)) for c in (
            "driving_score", "route_completion", "infraction_penalty", "infractions_total",
            "infractions_per_km")) + " | | | | " + " | ".join(
            _fmt(m.get(c)) for c in ("comfort_percent", "efficiency_percent",
                                     "plan_age_p50_s")) + " | | |")
    (out / "summary.md").write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------ runners
_WORKER: dict = {}


def _init_worker(domains, first_job: RouteJob) -> None:
    from multiprocessing.util import Finalize
    domain = domains.get()
    host = planner_host_for(first_job, f"domain{domain}")
    _WORKER.update(domain=domain, host=host)
    Finalize(None, host.close, exitpriority=10)  # runs when the pool closes its workers


def _run_in_worker(job: RouteJob) -> dict:
    return run_route_job(job, _WORKER["domain"], _WORKER["host"])


def run_local(jobs: Sequence[RouteJob], n_workers: int, domain_ids: Sequence[int]) -> list:
    """Results in job order: in this process (n_workers 1, this process's domain) or in
    spawned worker processes, worker k on domain_ids[k]; each keeps one planner process
    for its routes (closed_loop.PlannerHost)."""
    if not jobs:
        return []
    if n_workers <= 1 or len(jobs) <= 1:
        host = planner_host_for(jobs[0], "main")
        try:
            return [run_route_job(j, None, host) for j in jobs]
        finally:
            host.close()
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")  # no fork: rclpy threads are not fork-safe
    n = min(n_workers, len(jobs))
    domains = ctx.Manager().Queue()
    for d in domain_ids[:n]:
        domains.put(d)
    pool = ctx.Pool(processes=n, initializer=_init_worker, initargs=(domains, jobs[0]))
    try:
        results = list(pool.imap(_run_in_worker, jobs))
        pool.close()  # workers exit normally: their planner hosts close
        pool.join()
        return results
    finally:
        pool.terminate()


def default_domain_ids(n: int) -> list[int]:
    """ROS_DOMAIN_ID of this process (0 when unset) and the next n - 1 (mod 233)."""
    base = int(os.environ.get("ROS_DOMAIN_ID", "0") or 0)
    return [(base + k) % 233 for k in range(n)]


def compare_suites(summary: Mapping, golden_path: Path, tol: Tolerances
                   ) -> tuple[list[str], list[str]]:
    """(regressions, notes) against a golden summary.json (and its routes' reports);
    ValueError when they cannot be compared."""
    try:
        golden = json.loads(Path(golden_path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{golden_path}: cannot read suite summary: {exc}") from exc
    if not isinstance(golden, dict) or golden.get("format") != SUMMARY_FORMAT:
        raise ValueError(f"{golden_path}: not a suite summary (format "
                         f"{golden.get('format') if isinstance(golden, dict) else None!r})")
    have = [r["route"] for r in summary["routes"]]
    want = [r["route"] for r in golden["routes"]]
    if sorted(have) != sorted(want):
        raise ValueError(f"suites differ in routes: have {have}, golden {want}")
    regressions, notes = [], []
    golden_rows = {r["route"]: r for r in golden["routes"]}
    for row in summary["routes"]:
        name = row["route"]
        g = golden_rows[name]
        golden_report = Path(golden_path).parent / name / "report.json"
        current_report = Path(summary["run"]["output"]) / name / "report.json"
        if golden_report.is_file() and current_report.is_file():
            r, n = compare(load_report(current_report), load_report(golden_report), tol)
        else:  # the summary rows only
            r, n = [], []
            for key in ("driving_score", "route_completion"):
                if g[key] is not None and (row[key] is None
                                           or row[key] < g[key] - tol.score_abs):
                    r.append(f"{key}: golden {g[key]} -> {row[key]}")
            if (row["infractions"] or 0) > (g["infractions"] or 0):
                r.append(f"infractions: golden {g['infractions']} -> {row['infractions']}")
        regressions += [f"{name}: {line}" for line in r]
        notes += [f"{name}: {line}" for line in n]
    gm, cm = golden.get("means", {}), summary.get("means", {})
    if gm and cm and cm["driving_score"] < gm["driving_score"] - tol.score_abs:
        regressions.append(f"mean driving_score: golden {gm['driving_score']:.4g} -> "
                           f"{cm['driving_score']:.4g}")
    return regressions, notes


def run_suite(args, runner: Optional[Callable[[Sequence[RouteJob]], list]] = None) -> int:
    """The --suite command (module docstring); runner: replaces the local runner (Ray)."""
    out: Path = args.output
    try:
        routes = suite_routes(args.suite)
        if out.exists() and any(out.iterdir()):
            raise ConfigError(f"{out} exists and is not empty")
        jobs = make_jobs(routes, out, shared_argv(args), args.duration_given)
    except ConfigError as exc:
        print(f"closed_loop: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    out.mkdir(parents=True, exist_ok=True)
    wall_start = time.monotonic()
    if runner is None:
        domains = (args.domain_ids if args.domain_ids else default_domain_ids(args.jobs))
        if args.jobs > 1 and len(domains) < min(args.jobs, len(jobs)):
            print(f"closed_loop: error: --domain-ids: have {len(domains)}, need one per job "
                  f"({min(args.jobs, len(jobs))})", file=sys.stderr)
            return EXIT_ERROR
        results = run_local(jobs, args.jobs, domains)
    else:
        try:
            results = runner(jobs)
        except ConfigError as exc:  # e.g. Ray not installed, too few domain ids
            print(f"closed_loop: error: {exc}", file=sys.stderr)
            return EXIT_ERROR
    for result in results:
        if result["exit_code"] != EXIT_OK:
            print(f"closed_loop: route {result['route']} exited {result['exit_code']}:\n"
                  f"{result['output'][-1500:]}", file=sys.stderr)
    summary = summarise([r["row"] for r in results],
                        {"suite": str(Path(args.suite).resolve()), "output": str(out.resolve()),
                         "argv": list(shared_argv(args)), "jobs": args.jobs,
                         "durations_s": {Path(j.route).stem: j.duration_s for j in jobs},
                         "planner_processes": {r["route"]: r.get("planner")
                                               for r in results},
                         "wall_s": round(time.monotonic() - wall_start, 1)})
    write_summary(out, summary)
    print((out / "summary.md").read_text(), end="")
    if any(r["exit_code"] != EXIT_OK for r in results):
        return EXIT_ERROR
    if args.golden is not None:
        from alpamayo_ros.tools.closed_loop import print_verdict, tolerances
        return print_verdict(lambda: compare_suites(summary, args.golden, tolerances(args)))
    return EXIT_OK


# Options of a single run that every route of a suite shares.
_SHARED = (("planner", "--planner"), ("checkpoint", "--checkpoint"), ("device", "--device"),
           ("mode", "--mode"), ("plan_rate", "--plan-rate"),
           ("initial_speed", "--initial-speed"), ("plan_delay", "--plan-delay"),
           ("timeout", "--timeout"))


def shared_argv(args) -> tuple[str, ...]:
    argv: list[str] = []
    for attr, flag in _SHARED:
        value = getattr(args, attr)
        if value is not None and value != "":
            argv += [flag, str(value)]
    argv += ["--camera-size", "{}x{}".format(*args.camera_size)]
    if args.no_gate:
        argv.append("--no-gate")
    for item in args.planner_param:
        argv += ["--planner-param", item]
    return tuple(argv)
