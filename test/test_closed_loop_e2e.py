"""Closed loops through real processes (carla_sim, planner or route oracle, controller_node),
run by alpamayo-closed-loop or by its process runner, judged on the recorded bag.

(a) the controller on route-oracle plans: a straight, a curve (R 50 m at 10 m/s) and a
    stop; plans 0.5 s old tracked from the right point; golden regression exit codes;
(b) the full loop (constant-velocity backend, tiny checkpoint) for 30 s of sim time;
(c) two lockstep runs, one with a planner 1.2 s slower per tick, give the same trajectory;
real-time mode shows the measured latency.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import ros_harness

pytestmark = [pytest.mark.ros, pytest.mark.slow]
pytest.importorskip("rclpy")
pytest.importorskip("carla_msgs.msg")

from alpamayo_ros.sim.route import Route  # noqa: E402
from alpamayo_ros.tools import closed_loop  # noqa: E402
from alpamayo_ros.testbed.closed_loop_stack import command_line, sim_stack  # noqa: E402

TOOL = [sys.executable, "-m", "alpamayo_ros.tools.closed_loop"]
SLOW_PLANNER = ros_harness.REPO_ROOT / "test" / "slow_planner_node.py"


def run_tool(ros_env, *args, timeout=600):
    proc = subprocess.run(TOOL + [str(a) for a in args], env=ros_env, capture_output=True,
                          text=True, timeout=timeout, cwd=ros_harness.REPO_ROOT)
    return proc


def report_of(out: Path) -> dict:
    return json.loads((out / "report.json").read_text())


def assert_clean(report, proc=None):
    m = report["metrics"]
    assert report["error"] is None, report["error"]
    assert all(code == 0 for code in report["run"]["exit_codes"].values()), report["run"]
    assert m["stale_plans_tracked"] == 0
    assert all(stop["cause"] for stop in m["stops"])
    lock = m["lockstep"]
    if report["run"]["lockstep_gate"]:
        # Every planning tick answered (a plan or a logged skip). Without the gate a node
        # whose executor lags may see /clock jump over a tick (its timer fires once, late).
        assert m["ticks_missing"] == [], m["ticks_missing"]
        assert m["plans_total"] >= m["ticks_expected"]
        assert lock["lockstep_timeouts"] == 0 and lock["lockstep_breaks"] == 0
        assert lock["lockstep_input_lags"] == 0


def after(report, t_min):
    s = report["series"]
    t = np.asarray(s["t_s"])
    keep = t >= t_min
    return {k: np.asarray(v)[keep] for k, v in s.items()}


def rms(x):
    return float(np.sqrt(np.mean(np.square(x))))


@pytest.fixture(scope="module")
def short_route(tmp_path_factory):
    path = tmp_path_factory.mktemp("route") / "straight_curve_stop.json"
    path.write_text(json.dumps({"name": "straight_curve_stop", "segments": [
        {"type": "straight", "length": 40.0, "speed_limit": 10.0},
        {"type": "arc", "length": 60.0, "radius": 50.0, "direction": "left", "speed_limit": 10.0},
        {"type": "straight", "length": 30.0, "speed_limit": 10.0}]}))
    return path


@pytest.fixture(scope="module")
def oracle_run(ros_env, short_route, tmp_path_factory):
    out = tmp_path_factory.mktemp("oracle") / "run"
    proc = run_tool(ros_env, "-o", out, "--planner", "route_oracle", "--route", short_route,
                    "--duration", 20)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


def test_controller_tracks_straight_curve_and_stop_on_oracle_plans(oracle_run, short_route):
    report = report_of(oracle_run)
    assert_clean(report)
    m = report["metrics"]
    route = Route.load(short_route)
    assert m["plans_ok"] == m["plans_total"] == 39
    s = after(report, 2.0)  # after the first plan and the recovery from the start-up stop
    straight = s["station_m"] < 40.0
    curve = (s["station_m"] > 45.0) & (s["station_m"] < 95.0)
    assert straight.sum() > 10 and curve.sum() > 50
    assert rms(s["lateral_m"][straight]) < 0.05
    assert rms(s["lateral_m"][curve]) < 0.2 and np.max(np.abs(s["lateral_m"][curve])) < 0.3
    cruise = s["station_m"] < 100.0  # 10 m/s on the straight and the curve
    assert rms((s["speed_mps"] - s["target_speed_mps"])[cruise]) < 0.1
    braking = (s["station_m"] > 105.0) & (s["speed_mps"] > 1.0)
    assert braking.sum() > 20
    assert rms((s["speed_mps"] - s["target_speed_mps"])[braking]) < 0.6
    # The stop: standing at the end of the route, within a metre.
    assert s["speed_mps"][-1] < 0.05
    assert abs(s["station_m"][-1] - route.length) < 1.0
    assert m["lateral_deviation_rms_m"] < 0.2 and m["off_road_events"] == 0
    assert m["stops"][0]["cause"] == "no plan received yet" and m["stops"][0]["ended_s"] == 0.5
    assert (oracle_run / "report.png").stat().st_size > 10_000


def test_route_oracle_on_the_default_route_at_10_mps(ros_env, tmp_path):
    out = tmp_path / "default"
    proc = run_tool(ros_env, "-o", out, "--planner", "route_oracle", "--duration", 30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = report_of(out)
    assert_clean(report)
    m = report["metrics"]
    assert report["run"]["initial_speed_mps"] == 10.0
    assert m["lateral_deviation_rms_m"] < 0.2 and m["lateral_deviation_max_m"] < 0.35
    assert m["route_progress_m"] > 280.0 and m["off_road_events"] == 0
    assert m["plans_ok"] == m["plans_total"] >= 59
    s = after(report, 4.0)  # R 50, 30 and 100 m curves at 10 m/s
    assert rms(s["speed_mps"] - s["target_speed_mps"]) < 0.1


def test_golden_regression_exit_codes(ros_env, oracle_run, short_route, tmp_path):
    # The same run again: passes against the first (and drives the same trajectory).
    again = tmp_path / "again"
    proc = run_tool(ros_env, "-o", again, "--planner", "route_oracle", "--route", short_route,
                    "--duration", 20, "--golden", oracle_run / "report.json")
    assert proc.returncode == 0 and "PASS" in proc.stdout, proc.stdout + proc.stderr
    assert (report_of(again)["metrics"]["odometry_sha256"]
            == report_of(oracle_run)["metrics"]["odometry_sha256"])
    # A golden that tracked better: regression (1), rebuilt from the recorded bag.
    golden = report_of(oracle_run)
    golden["metrics"]["lateral_deviation_rms_m"] = 0.0
    golden["metrics"]["lateral_deviation_max_m"] = 0.0
    better = tmp_path / "better.json"
    better.write_text(json.dumps(golden))
    proc = run_tool(ros_env, "-o", again, "--from-bag", "--route", short_route,
                    "--golden", better, "--lateral-tolerance", 0.001)
    assert proc.returncode == 1 and "REGRESSION  lateral_deviation_rms_m" in proc.stdout
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    proc = run_tool(ros_env, "-o", again, "--from-bag", "--route", short_route,
                    "--golden", broken)
    assert proc.returncode == 2 and "cannot read report" in proc.stderr


def test_plans_half_a_second_old_are_tracked_from_the_right_point(ros_env, tmp_path):
    """Every plan's t0 is 0.5 s before its tick (the oracle plans from the odometry of
    then), so each reaches the controller 0.5 s old; in lockstep, so it is exact."""
    out = tmp_path / "delay"
    proc = run_tool(ros_env, "-o", out, "--planner", "route_oracle", "--duration", 20,
                    "--plan-delay", 0.5)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = report_of(out)
    assert_clean(report)
    m = report["metrics"]
    assert m["plan_age_p50_s"] == m["plan_age_max_s"] == 0.5
    s = after(report, 3.0)
    assert rms(s["lateral_m"]) < 0.2 and np.max(np.abs(s["lateral_m"])) < 0.35
    assert rms(s["speed_mps"] - s["target_speed_mps"]) < 0.3


def test_full_loop_constant_velocity_30_s(ros_env, tmp_path):
    out = tmp_path / "cv"
    proc = run_tool(ros_env, "-o", out, "--planner", "constant_velocity", "--duration", 30)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = report_of(out)
    assert_clean(report)
    m = report["metrics"]
    assert m["duration_s"] == pytest.approx(30.0)
    assert m["ticks_expected"] == 59 and m["plans_total"] >= 59
    # The history needs 1.5 s: the first two ticks are logged skips, the rest are plans.
    assert m["plan_statuses"].get("SKIPPED", 0) == 2 and m["plans_ok"] >= 57
    assert report["skip_reasons_first"][0].startswith("odometry: history needs poses")
    assert m["plan_age_p50_s"] == 0.0  # lockstep: t0 = the tick (frames at the tick)


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    pytest.importorskip("torch")
    from alpamayo_ros.model.tiny_checkpoint import write_tiny_checkpoint
    return write_tiny_checkpoint(tmp_path_factory.mktemp("tiny"), seed=0)


def test_full_loop_tiny_checkpoint_30_s(ros_env, tmp_path, tiny_checkpoint):
    """The real model code on a random tiny checkpoint: its plans are noise; the loop must
    stay safe: every tick answered, no stale plan tracked, stops with causes, no crash."""
    out = tmp_path / "tiny"
    proc = run_tool(ros_env, "-o", out, "--planner", "alpamayo", "--checkpoint",
                    tiny_checkpoint, "--plan-rate", 1.0, "--duration", 30,
                    "--planner-param", "model.max_coc_tokens=8", "--camera-size", "192x108")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = report_of(out)
    assert_clean(report)
    m = report["metrics"]
    assert m["ticks_expected"] == 29 and m["plans_total"] >= 29
    assert m["plan_statuses"].get("SKIPPED", 0) >= 1  # the history needs 1.5 s
    assert m["stops"] and m["stops"][0]["cause"] == "no plan received yet"
    assert m["commands"] >= 600


def run_stack(ros_env, out: Path, *, slow_s=None, mode="lockstep", duration=8.0):
    """The tool's process runner on sim_stack(constant_velocity); slow_s: the planner is
    test/slow_planner_node.py, every model call sleeping that long (wall time)."""
    lockstep = mode == "lockstep"
    specs = sim_stack("constant_velocity", lockstep=lockstep,
                      sim={"duration": duration, "record_path": str(out / "bag"),
                           "initial_speed": 10.0},
                      controller_extra={"diagnostics.period": 0.5})
    commands = {}
    if slow_s is not None:
        argv = command_line(specs[1])
        commands[specs[1].node_name] = [sys.executable, str(SLOW_PLANNER), "--delay",
                                        str(slow_s), "--fast-calls", "0"] + argv[2:]
    error, codes = closed_loop.run_processes(specs, out / "logs", 300.0, commands, ros_env)
    assert error is None, error + "\n" + "\n".join(
        p.read_text()[-3000:] for p in sorted((out / "logs").glob("*.log")))
    report = closed_loop.report_from_bag(
        out, Route.load(), specs, planning_period_s=0.5, gate=lockstep,
        run_info={"exit_codes": codes, "lockstep_gate": lockstep})
    report["error"] = None
    return report


def test_lockstep_runs_repeat_exactly_whatever_the_inference_speed(ros_env, tmp_path):
    fast = run_stack(ros_env, tmp_path / "fast")
    slow = run_stack(ros_env, tmp_path / "slow", slow_s=1.2)  # > the simulator's 1 s wait
    for report in (fast, slow):
        assert_clean(report)
    assert slow["metrics"]["lockstep"]["lockstep_waits"] >= 15  # ticks 0.5 .. 7.5 s
    assert fast["metrics"]["odometry_sha256"] == slow["metrics"]["odometry_sha256"]
    assert fast["metrics"]["plan_age_p50_s"] == slow["metrics"]["plan_age_p50_s"] == 0.0
    assert fast["metrics"]["plans_ok"] == slow["metrics"]["plans_ok"] > 10


def test_real_time_mode_shows_the_measured_latency(ros_env, tmp_path):
    report = run_stack(ros_env, tmp_path / "rt", slow_s=0.3, mode="realtime")
    m = report["metrics"]
    assert report["error"] is None and m["plans_ok"] >= 5
    # The car sees the inference time (0.3 s of wall = sim time) as plan age; on a loaded
    # machine more (the simulator keeps stepping on wall time), never less.
    assert m["plan_age_p50_s"] >= 0.3
    assert m["plan_age_p50_s"] < 2.0
