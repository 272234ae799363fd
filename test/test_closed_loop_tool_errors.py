"""The closed-loop tool refuses bad route files and arguments before it starts anything:
exit 2, one line on stderr naming the problem, no traceback, no process started, nothing
written."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import ros_harness
from alpamayo_ros.sim.road_renderer import MAX_RASTER_CELLS
from alpamayo_ros.sim.route import ROUTE_LIMITS
from alpamayo_ros.tools import closed_loop

GOOD_SEGMENT = {"type": "straight", "length": 60.0, "speed_limit": 10.0}


def _route(**changes):
    doc = {"name": "bad", "start": {"x": 0.0, "y": 0.0, "yaw_deg": 0.0}, "lane_width": 3.5,
           "segments": [dict(GOOD_SEGMENT)]}
    doc.update(changes)
    return doc


def _segment(**changes):
    return _route(segments=[dict(GOOD_SEGMENT, **changes)])


# (id, route file content or None for the default route, extra arguments, expected text)
CASES = [
    ("length is a string", _segment(length="60 m"), [],
     "segment 0: length: have str '60 m', need a number"),
    ("length is null", _segment(length=None), [],
     "segment 0: length: have NoneType None, need a number"),
    ("length 1e300", _segment(length=1e300), [],
     f"segment 0: length: have 1e+300, need a number in (0, {ROUTE_LIMITS.max_length:g}]"),
    ("length 0", _segment(length=0), [], "segment 0: length: have 0.0, need a number in (0,"),
    ("segments not a list", _route(segments=dict(GOOD_SEGMENT)), [],
     "segments: have dict"),
    ("no segments", _route(segments=[]), [], "need a list of at least one segment"),
    ("segment not an object", _route(segments=[60.0]), [],
     "segment 0: have float 60.0, need a JSON object"),
    ("route not an object", [GOOD_SEGMENT], [], "the route: have list"),
    ("yaw NaN", _route(start={"yaw_deg": float("nan")}), [],
     "start.yaw_deg: have nan, need a number in [-360, 360]"),
    ("start x infinite", _route(start={"x": float("inf")}), [], "start.x: have inf"),
    ("lane width -3", _route(lane_width=-3), [],
     f"lane_width: have -3.0, need a number in [{ROUTE_LIMITS.min_lane_width:g}, "
     f"{ROUTE_LIMITS.max_lane_width:g}]"),
    ("speed limit a bool", _segment(speed_limit=True), [],
     "segment 0: speed_limit: have bool True, need a number"),
    ("unknown key", _segment(lenght=60.0), [], "unknown key 'lenght' (did you mean 'length'?)"),
    ("arc radius 2 m", _segment(type="arc", radius=2.0, direction="left"), [],
     "segment 0: radius: have 2.0, need a number in [5,"),
    ("arc direction up", _segment(type="arc", radius=50.0, direction="up"), [],
     "direction: have str 'up', need \"left\" or \"right\""),
    ("1000 km route", _route(segments=[dict(GOOD_SEGMENT, length=50_000.0)] * 20), [],
     f"the segments add up to 1e+06 m, need at most {ROUTE_LIMITS.max_length:g} m"),
    # 20 km of road on a 6.5 km x 6.5 km square: inside the length limit, but its raster
    # would not fit in memory.
    ("raster too large", _route(segments=[
        {"type": "straight", "length": 6500.0, "speed_limit": 10.0},
        {"type": "arc", "length": 7854.0, "radius": 5000.0, "direction": "left",
         "speed_limit": 10.0},
        {"type": "straight", "length": 6500.0, "speed_limit": 10.0}]), [],
     "Mi cells"),
    ("route file is not JSON", "{not json", [], "cannot read route"),
    ("--duration 0", None, ["--duration", "0"],
     "argument --duration: have '0', need a finite number > 0"),
    ("--duration nan", None, ["--duration", "nan"], "argument --duration: have 'nan'"),
    ("--plan-rate 0", None, ["--plan-rate", "0"],
     "argument --plan-rate: have '0', need a finite number > 0"),
    ("--plan-rate 3 (not a multiple of the sim step)", None, ["--plan-rate", "3"],
     "carla_sim (carla_sim): tick_settle.period: have 333333333 ns, need a multiple of the "
     "step"),
    ("--plan-delay 6 (above the oracle's range)", None, ["--plan-delay", "6"],
     "alpamayo_route_oracle (route_oracle): plan_delay: have 6.0, need <= 5"),
    ("--initial-speed -1", None, ["--initial-speed", "-1"], "argument --initial-speed"),
    ("--camera-size 8x8", None, ["--camera-size", "8x8"],
     "carla_sim (carla_sim): camera_width: have 8, need >= 16"),
    ("--planner-param with a typo", None,
     ["--planner", "constant_velocity", "--planner-param", "model.max_coc_tokenz=16"],
     "alpamayo_planner (planner_node): unknown parameter 'model.max_coc_tokenz' (did you "
     "mean 'model.max_coc_tokens'?)"),
    ("--planner-param out of range", None,
     ["--planner", "constant_velocity", "--planner-param", "rate_hz=0.001"],
     "alpamayo_planner (planner_node): rate_hz: have 0.001"),
    ("--planner-param not YAML", None,
     ["--planner", "constant_velocity", "--planner-param", "core.frame_tolerance=[1"],
     "--planner-param core.frame_tolerance: have '[1', need a YAML value"),
    ("--planner alpamayo without a checkpoint", None, ["--planner", "alpamayo"],
     "--planner alpamayo needs --checkpoint"),
]


def _write_route(tmp_path, content):
    path = tmp_path / "route.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


@pytest.mark.parametrize("route, extra, expected", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_bad_route_files_and_arguments_fail_in_one_line_before_anything_starts(
        tmp_path, capsys, monkeypatch, route, extra, expected):
    def no_processes(*args, **kwargs):
        raise AssertionError("a process was started")

    monkeypatch.setattr(closed_loop, "run_processes", no_processes)
    out = tmp_path / "out"
    argv = ["-o", str(out), *extra]
    if route is not None:
        argv += ["--route", str(_write_route(tmp_path, route))]
    try:
        code = closed_loop.main(argv)
    except SystemExit as exc:  # argparse's usage errors
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("closed_loop: error: ") and err.count("\n") == 1, err
    assert expected in err
    assert not out.exists()  # nothing written


@pytest.mark.parametrize("make_blocker", ["file", "parent"])
def test_an_output_path_at_or_under_a_file_is_refused(tmp_path, capsys, monkeypatch,
                                                      make_blocker):
    monkeypatch.setattr(closed_loop, "run_processes", None)  # never called
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    out = blocker if make_blocker == "file" else blocker / "out"
    assert closed_loop.main(["-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(blocker) in err
    assert "is not a directory" in err or "is a file" in err


def test_the_raster_limit_admits_the_longest_straight_route():
    from alpamayo_ros.sim.road_renderer import raster_shape
    from alpamayo_ros.sim.route import Route
    route = Route.from_dict({"segments": [{"type": "straight", "speed_limit": 10.0,
                                           "length": ROUTE_LIMITS.max_length}]})
    rows, cols = raster_shape(route)
    assert rows * cols <= MAX_RASTER_CELLS


def test_the_installed_tool_prints_no_traceback(tmp_path):
    route = _write_route(tmp_path, _route(start={"yaw_deg": float("nan")}))
    proc = subprocess.run(
        [sys.executable, str(ros_harness.REPO_ROOT / "scripts" / "closed_loop"),
         "-o", str(tmp_path / "out"), "--route", str(route)],
        capture_output=True, text=True, timeout=120, cwd=ros_harness.REPO_ROOT)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "start.yaw_deg: have nan" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
