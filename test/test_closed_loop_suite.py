"""Route suites (`alpamayo-closed-loop --suite`): summaries, golden comparison and exit
codes on recorded results (no process), and through real processes: the shipped suite on
route-oracle plans (DS 100, no collision on every route), two lockstep suite runs that
drive identical trajectories, the constant-velocity planner hitting an obstacle (the
bridge's collision and lane invasion events scored), and the Ray actor pool where Ray is
installed."""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import ros_harness
from alpamayo_ros.sim.route import Route
from alpamayo_ros.tools import closed_loop, closed_loop_suite as suite

TOOL = [sys.executable, "-m", "alpamayo_ros.tools.closed_loop"]


def run_tool(env, *args, timeout=900):
    return subprocess.run(TOOL + [str(a) for a in args], env=env, capture_output=True,
                          text=True, timeout=timeout, cwd=ros_harness.REPO_ROOT)


def summary_of(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


# ------------------------------------------------------------------ without processes
def test_route_durations_follow_the_reachable_speed_profile():
    route = Route.from_dict({"segments": [{"type": "straight", "length": 100.0,
                                           "speed_limit": 10.0}]})
    # 75 m at 10 m/s (7.5 s), then braking at 2 m/s^2 over 25 m (5 s), plus the 6 s
    # margin, rounded up to half seconds.
    assert suite.route_duration(route) == 18.5
    routes = suite.suite_routes(suite.SUITE_DIR)
    assert len(routes) >= 6
    assert {p.stem for p in routes} >= {"fast_straight", "hairpin_r15", "s_bends",
                                         "speed_limits", "stop_at_end", "obstacle_past_end",
                                         "obstacle_beside_lane"}
    hairpin = Route.load(suite.SUITE_DIR / "hairpin_r15.json")
    assert any(s.kind == "arc" and s.radius == 15.0 for s in hairpin.segments)


def _row(name, ds, rc=100.0, infractions=0, digest="x"):
    return {**dict.fromkeys(suite.COLUMNS), "route": name, "driving_score": ds,
            "route_completion": rc, "infraction_penalty": ds / rc if rc else 0.0,
            "infractions": infractions, "infractions_total": infractions,
            "infractions_per_km": 0.0, "route_length_m": 100.0, "comfort_percent": 100.0,
            "efficiency_percent": 90.0, "plan_age_p50_s": 0.0, "status": "Completed",
            "exit_code": 0, "odometry_sha256": digest}


def test_summary_files_and_leaderboard_means(tmp_path):
    summary = suite.summarise([_row("a", 100.0), _row("b", 30.0, 50.0, 2)],
                              {"output": str(tmp_path)})
    m = summary["means"]
    assert m["driving_score"] == 65.0 and m["route_completion"] == 75.0
    assert m["infraction_penalty"] == pytest.approx(0.8)
    assert m["infractions_per_km"] == pytest.approx(2 / 0.15)   # 0.1 km + 0.05 km driven
    suite.write_summary(tmp_path, summary)
    csv_lines = (tmp_path / "summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("route,driving_score,route_completion,infraction_penalty")
    assert csv_lines[-1].startswith("mean,65.0,75.0,0.8")
    md = (tmp_path / "summary.md").read_text()
    assert "| DS | RC | IP |" in md and "| **mean** | 65.00 | 75.00 | 0.80 |" in md
    # A route without a report: no means (the leaderboard would not score the suite).
    broken = suite.summarise([_row("a", 100.0), suite.summary_row("b", None, 2)], {})
    assert broken["means"] == {}


def _args(tmp_path, golden=None):
    args = closed_loop.build_parser().parse_args(
        ["-o", str(tmp_path / "out"), "--suite", str(suite.SUITE_DIR)]
        + (["--golden", str(golden)] if golden else []))
    args.duration_given = None
    return args


def _fake_runner(rows):
    def runner(jobs):
        by_name = {r["route"]: r for r in rows}
        return [{"route": Path(j.route).stem, "exit_code": by_name[Path(j.route).stem]
                 ["exit_code"], "output": "", "row": by_name[Path(j.route).stem]}
                for j in jobs]
    return runner


def test_golden_suite_exit_codes(tmp_path):
    names = [p.stem for p in suite.suite_routes(suite.SUITE_DIR)]
    rows = [_row(n, 100.0) for n in names]
    golden_dir = tmp_path / "golden"
    golden_dir.mkdir()
    suite.write_summary(golden_dir, suite.summarise(rows, {"output": str(golden_dir)}))
    golden = golden_dir / "summary.json"
    assert suite.run_suite(_args(tmp_path / "a", golden), _fake_runner(rows)) == 0
    worse = [_row(n, 65.0 if n == "obstacle_past_end" else 100.0, infractions=int(
        n == "obstacle_past_end")) for n in names]
    assert suite.run_suite(_args(tmp_path / "b", golden), _fake_runner(worse)) == 1
    # A route that failed to run: error, whatever the golden says.
    failed = [dict(r, exit_code=2) if r["route"] == "s_bends" else r for r in rows]
    assert suite.run_suite(_args(tmp_path / "c", golden), _fake_runner(failed)) == 2
    # Unreadable golden, or one of another suite: error.
    (tmp_path / "bad.json").write_text("{")
    assert suite.run_suite(_args(tmp_path / "d", tmp_path / "bad.json"),
                           _fake_runner(rows)) == 2
    other = golden_dir / "other.json"
    other.write_text(json.dumps(suite.summarise(rows[:2], {"output": str(golden_dir)})))
    assert suite.run_suite(_args(tmp_path / "e", other), _fake_runner(rows)) == 2
    regressions, _ = suite.compare_suites(
        suite.summarise(worse, {"output": str(tmp_path)}), golden,
        closed_loop.Tolerances())
    assert any(r.startswith("obstacle_past_end: driving_score") for r in regressions)


def test_suite_argument_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_tool(None, "--suite", empty, "-o", tmp_path / "o")
    assert proc.returncode == 2 and "has no route files" in proc.stderr
    proc = run_tool(None, "--suite", suite.SUITE_DIR, "-o", tmp_path / "o", "--jobs", "0")
    assert proc.returncode == 2 and "--jobs" in proc.stderr
    proc = run_tool(None, "--suite", suite.SUITE_DIR, "-o", tmp_path / "o2", "--jobs", "3",
                    "--domain-ids", "7")
    assert proc.returncode == 2 and "--domain-ids: have 1, need one per job (3)" in proc.stderr


# ------------------------------------------------------------------ through processes
ros = [pytest.mark.ros, pytest.mark.slow]


def _domains(n):
    leases = [ros_harness.DomainIdLease() for _ in range(n)]
    return leases, ",".join(str(lease.domain_id) for lease in leases)


@pytest.fixture(scope="module")
def oracle_suite(ros_env, tmp_path_factory):
    pytest.importorskip("rclpy")
    pytest.importorskip("carla_msgs.msg")
    out = tmp_path_factory.mktemp("suite") / "oracle"
    leases, ids = _domains(1)
    try:
        proc = run_tool(ros_env, "--suite", suite.SUITE_DIR, "--planner", "route_oracle",
                        "--jobs", 2, "--domain-ids", f"{ros_env['ROS_DOMAIN_ID']},{ids}",
                        "-o", out)
    finally:
        for lease in leases:
            lease.release()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out


@pytest.mark.ros
@pytest.mark.slow
def test_the_route_oracle_scores_100_on_every_route_of_the_shipped_suite(oracle_suite):
    summary = summary_of(oracle_suite)
    assert len(summary["routes"]) >= 6
    for row in summary["routes"]:
        assert row["exit_code"] == 0, row
        assert row["driving_score"] == 100.0, row
        assert row["route_completion"] == 100.0 and row["infraction_penalty"] == 1.0, row
        assert row["collisions"] == 0 and row["status"] == "Completed", row
        # Comfort: the start-up stop (no plan for 0.5 s) and the final stop exceed the
        # longitudinal jerk bound in their windows; the rest is within the bounds.
        assert 0.0 < row["comfort_percent"] <= 100.0, row
        report = json.loads((oracle_suite / row["route"] / "report.json").read_text())
        assert report["error"] is None and report["metrics"]["off_road_events"] == 0
    m = summary["means"]
    assert m["driving_score"] == 100.0 and m["infractions_total"] == 0
    for name in ("summary.csv", "summary.md"):
        assert (oracle_suite / name).stat().st_size > 100
    # The obstacle past the end: the oracle stopped before it (front 1.5 m short).
    report = json.loads((oracle_suite / "obstacle_past_end" / "report.json").read_text())
    assert report["series"]["speed_mps"][-1] < 0.05
    assert report["scores"]["collision_events"] == 0


def _plans(out: Path, route: str) -> dict:
    """What a route's planner answered: counts by status, ticks missing, lockstep counters
    and a digest of every plan's tick, t0, status and trajectories (the bag's
    /alpamayo/plan)."""
    import hashlib
    from alpamayo_ros.bag import bag_io
    report = json.loads((out / route / "report.json").read_text())
    m = report["metrics"]
    digest = hashlib.sha256()
    with bag_io.BagReader(out / route / "bag") as reader:
        for msg in reader.messages(["/alpamayo/plan"]):
            plan = msg.msg
            if bag_io.stamp_to_ns(plan.tick_stamp) > msg.log_time_ns + 500_000_000:
                continue  # a kept planner's latched plan of the previous route (plans_ignored)
            # Not the reason's text: a kept planner adds why its buffers restarted.
            digest.update(repr((bag_io.stamp_to_ns(plan.tick_stamp), msg.stamp_ns,
                                int(plan.status), int(plan.selected_index),
                                [[(p.position.x, p.position.y, p.orientation.z)
                                  for p in c.poses] for c in plan.candidates])).encode())
    return {"statuses": m["plan_statuses"], "plans_total": m["plans_total"],
            "ticks_missing": m["ticks_missing"], "lockstep": m["lockstep"],
            "digest": digest.hexdigest()}


@pytest.mark.ros
@pytest.mark.slow
def test_two_lockstep_suite_runs_are_identical(ros_env, tmp_path):
    """Two routes in order on one planner process (its model loaded once), then with
    --jobs 2 (a planner per worker): identical drives and identical plans (counts by
    status, and every plan's tick, t0, status and trajectories), whatever the load. The
    planner subscribes reliably and the simulator publishes a tick's /clock once its data
    is acknowledged (closed_loop_stack.sim_stack), so no tick misses a sample."""
    subset = tmp_path / "subset"
    subset.mkdir()
    names = ("obstacle_past_end", "stop_at_end")
    for name in names:
        shutil.copy(suite.SUITE_DIR / f"{name}.json", subset)
    leases, ids = _domains(1)
    try:
        first = run_tool(ros_env, "--suite", subset, "--planner", "constant_velocity",
                         "-o", tmp_path / "a")
        assert first.returncode == 0, first.stdout + first.stderr
        second = run_tool(ros_env, "--suite", subset, "--planner", "constant_velocity",
                          "--jobs", 2, "--domain-ids", f"{ros_env['ROS_DOMAIN_ID']},{ids}",
                          "-o", tmp_path / "b")
    finally:
        for lease in leases:
            lease.release()
    assert second.returncode == 0, second.stdout + second.stderr
    a, b = summary_of(tmp_path / "a"), summary_of(tmp_path / "b")
    assert [r["odometry_sha256"] for r in a["routes"]] == \
        [r["odometry_sha256"] for r in b["routes"]]
    assert a["means"] == b["means"]
    for name in names:
        for run in ("a", "b"):  # never stepped without a command, every tick's data acked
            sim_log = (tmp_path / run / name / "logs" / "carla_sim.log").read_text()
            assert "(0 control timeouts, 0 acknowledgement timeouts)" in sim_log, sim_log
        plans_a, plans_b = _plans(tmp_path / "a", name), _plans(tmp_path / "b", name)
        assert plans_a == plans_b, name
        assert plans_a["ticks_missing"] == [] and plans_a["lockstep"]["lockstep_timeouts"] == 0
        assert plans_a["lockstep"]["lockstep_input_lags"] == 0
    # In order, one planner process planned both routes: started once, its model loaded
    # once (its own log); with two workers each had its own.
    hosts = list(a["run"]["planner_processes"].values())
    assert len({h["pid"] for h in hosts}) == 1
    assert [h["starts"] for h in hosts] == [1, 1]
    assert [h["model_loads"] for h in hosts] == [1, 1]
    assert len({h["pid"] for h in b["run"]["planner_processes"].values()}) == 2


@pytest.mark.ros
@pytest.mark.slow
def test_constant_velocity_hits_an_obstacle_and_leaves_the_lane(ros_env, tmp_path):
    """Plans at the current speed and heading: through an obstacle in the lane at 30 m,
    straight on where the route bends left (R 30 m) over the solid right edge line."""
    pytest.importorskip("carla_msgs.msg")
    route = tmp_path / "obstacle_and_bend.json"
    route.write_text(json.dumps({"name": "obstacle_and_bend", "segments": [
        {"type": "straight", "length": 40.0, "speed_limit": 8.0},
        {"type": "arc", "length": 20.0, "radius": 30.0, "direction": "left",
         "speed_limit": 8.0}],
        "obstacles": [{"s": 30.0, "lateral": 0.0, "length": 4.6, "width": 1.9}]}))
    out = tmp_path / "cv"
    proc = run_tool(ros_env, "-o", out, "--planner", "constant_velocity", "--route", route,
                    "--duration", 14)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "report.json").read_text())
    lb = report["scores"]["leaderboard"]
    assert [(c["kind"], c["actor_id"]) for c in lb["collisions"]] == [
        ("collision_static", 1000)]
    assert report["scores"]["collision_events"] > 1     # one per step of contact
    assert lb["lane_invasions_by_marking"].get("solid", 0) >= 1
    assert lb["off_lane_percent"] > 0.0
    assert lb["infraction_penalty"] == pytest.approx(0.65 * (1 - lb["off_lane_percent"] / 100))
    assert lb["driving_score"] < 65.0
    from alpamayo_ros.bag import bag_io
    with bag_io.BagReader(out / "bag") as reader:
        topics = reader.topics
    assert topics["/carla/ego_vehicle/collision"] == "carla_msgs/msg/CarlaCollisionEvent"
    assert topics["/carla/ego_vehicle/lane_invasion"] == \
        "carla_msgs/msg/CarlaLaneInvasionEvent"
    assert topics["/carla/actor_list"] == "carla_msgs/msg/CarlaActorList"


@pytest.mark.ros
@pytest.mark.slow
def test_routes_on_a_ray_actor_pool(ros_env, tmp_path):
    """Where Ray is installed: two routes on a pool of one actor on the module's ROS
    domain run the same route job as the --jobs workers, results in route order, and the
    actor's planner process (its model) is started once for both: one pid, one start, one
    model load in the planner's own log."""
    pytest.importorskip("ray")
    from alpamayo_ros.tools import ray_closed_loop
    routes = [suite.SUITE_DIR / "stop_at_end.json", suite.SUITE_DIR / "obstacle_past_end.json"]
    jobs = suite.make_jobs(routes, tmp_path, ("--planner", "constant_velocity"), None)
    results = ray_closed_loop.run_routes_on_ray(
        jobs, [int(ros_env["ROS_DOMAIN_ID"])], num_actors=1,
        init_kwargs={"include_dashboard": False, "num_cpus": 1,
                     "runtime_env": {"env_vars": dict(ros_env)}})
    assert [r["route"] for r in results] == ["stop_at_end", "obstacle_past_end"]
    for r in results:
        assert r["exit_code"] == 0, r["output"]
        assert r["row"]["driving_score"] is not None
        assert r["worker"]["domain_id"] == int(ros_env["ROS_DOMAIN_ID"])
    assert [r["worker"]["routes_run"] for r in results] == [1, 2]
    assert results[0]["planner"]["pid"] == results[1]["planner"]["pid"]
    assert [r["planner"]["starts"] for r in results] == [1, 1]
    assert [r["planner"]["model_loads"] for r in results] == [1, 1]
    log = (tmp_path / "logs" / "planner_actor0" / "alpamayo_planner.log").read_text()
    assert log.count("]: configured: ") == 1


def test_parser_has_the_suite_options():
    args = closed_loop.build_parser().parse_args(["-o", "x", "--suite", "d", "--jobs", "3",
                                                  "--domain-ids", "5,6,7"])
    assert isinstance(args, argparse.Namespace)
    assert args.jobs == 3 and args.domain_ids == [5, 6, 7] and args.suite == Path("d")
