"""Replay with navigation (issue 16 item 7): a bag's alpamayo/navigation instructions are
replayed by stamp (the newest valid at t0, as the node chooses), --nav-text forces one,
--nav-compare runs with / without / direction-swapped; an R1 checkpoint ignores them with
one warning, as the node does.

The first two tests need no torch: a constant-velocity model under a 1.5 (or R1)
description records the text of each call. The other 1.5 runs use the real model code on a tiny random 1.5 checkpoint with one camera
(front, index 1) and 2 diffusion steps, so a run takes seconds on a loaded CPU.
"""
from __future__ import annotations

import csv
import json

import pytest

from alpamayo_ros.bag import bag_io
from alpamayo_ros.core import model_family
from alpamayo_ros.core.kinematic_model import ConstantVelocityModel
from alpamayo_ros.core.model_family import ALPAMAYO_1_5, R1
from alpamayo_ros.core.navigation import NAVIGATION_TOPIC, swap_direction
from alpamayo_ros.core.types import NS_PER_S, InferenceOptions, ModelDescription
from alpamayo_ros.replay import engine as replay_engine
from alpamayo_ros.replay import jobs as replay_jobs
from alpamayo_ros.replay import navigation as replay_navigation
from alpamayo_ros.replay.engine import ReplayOptions
from alpamayo_ros.replay.outputs import PLAN_TOPIC, write_plan_bag
from alpamayo_ros.sim.scenario import default_cameras, make_preset
from alpamayo_ros.tools import make_bag, replay
from scenario_bags import HEIGHT, WIDTH, job, parameters, write_bag
from test_core_navigation import RecordingModel

LEFT, RIGHT = "Turn left in 40m", "Turn right in 10m"
# (scenario time [s], valid for [s], text). Ticks every 0.5 s; the first planned one is
# at 1.5 s (1.6 s of history). Expected per tick time, as core.navigation chooses:
# 1.5 none (nothing stamped yet), 2.0 LEFT, 2.5 RIGHT (the newer of two valid ones),
# 3.0 expired (LEFT ended at 2.7, RIGHT at 2.8), 3.5 empty (a valid "" clears),
# 4.0 expired again. The instruction with a special-token marker is refused (counted).
INSTRUCTIONS = ((1.9, 0.8, LEFT), (1.95, 10.0, "Turn left <|route_end|>"),
                (2.3, 0.5, RIGHT), (3.2, 0.5, ""))
EXPECTED = {1.5: ("none", ""), 2.0: ("used", LEFT), 2.5: ("used", RIGHT),
            3.0: ("expired", ""), 3.5: ("empty", ""), 4.0: ("expired", "")}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pytest.importorskip("torch")
    from alpamayo_ros.model.tiny_checkpoint import write_tiny_checkpoint
    root = tmp_path_factory.mktemp("navreplay")
    checkpoint = write_tiny_checkpoint(root / "model15", seed=0, family="1.5")
    scenario = make_preset("curved_drive", duration_s=4.0,
                           cameras=default_cameras(10.0, WIDTH, HEIGHT, "rgb8")[1:2])
    summary = make_bag.write_scenario_bag(root / "bag", scenario,
                                          layout=make_bag.BagLayout(navigation=INSTRUCTIONS))
    extra = {"model.backend": "alpamayo", "model.checkpoint_dir": str(checkpoint),
             "model.device": "cpu", "model.dtype": "float32", "model.max_coc_tokens": 4,
             "model.diffusion_steps": 2, "model.seed": 0}
    params = root / "params.yaml"
    make_bag.write_parameter_file(params, make_bag.planner_parameters_for(
        summary, backend="alpamayo", extra=extra))
    return root, summary, parameters(summary, extra=extra), params


TEXT = "Turn left in 40m"


def _bag_with_navigation(tmp_path):
    """A scenario bag and a copy with one instruction (stamped 1 s in, valid 60 s) and one
    the checks refuse (control characters)."""
    summary = write_bag(tmp_path / "plain", duration_s=5.0)
    with bag_io.BagReader(tmp_path / "plain") as reader:
        start = reader.start_time_ns
        messages = list(reader.raw_messages())
    nav_cls = bag_io.msg_class(bag_io.NAVIGATION_TYPE)
    duration = bag_io.msg_class("builtin_interfaces/msg/Duration")

    def instruction(at_s: float, text: str):
        stamp = start + int(at_s * NS_PER_S)
        msg = nav_cls(header=bag_io.header(stamp, ""), text=text,
                      valid_for=duration(sec=60, nanosec=0), source="route")
        return stamp, msg

    extra = [instruction(1.0, TEXT), instruction(1.5, "bad\x07text")]
    with bag_io.BagWriter(tmp_path / "nav") as writer:
        pending = sorted(extra, key=lambda e: e[0])
        for conn, log_time, raw in messages:
            while pending and pending[0][0] <= log_time:
                stamp, msg = pending.pop(0)
                writer.write("/" + NAVIGATION_TOPIC, bag_io.NAVIGATION_TYPE, stamp, msg)
            writer.write_raw(conn.topic, conn.msgtype, log_time, raw)
    return summary


def _replay(tmp_path, summary, family):
    values = parameters(summary)
    model = RecordingModel()
    inference = replay_engine.inference_options(values)
    description = ModelDescription("", model.model_id, "cpu", "float32", inference,
                                   family=family)
    replay = replay_engine.BagReplay(job(tmp_path / "nav", values), model, description)
    result, _ = replay.run()
    return replay, result, model


def test_a_navigation_family_gets_the_bags_instructions(tmp_path):
    summary = _bag_with_navigation(tmp_path)
    replay, result, model = _replay(tmp_path, summary, ALPAMAYO_1_5)
    assert result["status"] == "ok", result["error"]
    assert result["topics"]["navigation"] == "/" + NAVIGATION_TOPIC
    assert result["counts"]["navigation"] == 2
    assert any("control characters" in reason for reason in result["rejections"])
    used = [r for r in replay.results if r.navigation_text == TEXT]
    assert used and all(r.navigation_status == "used" for r in used)
    assert TEXT in model.texts
    # The output bag's PlannerOutput carries the text the model saw, as the node's does.
    write_plan_bag(tmp_path / "out", replay.results, replay.output_context(), replay.values)
    with bag_io.BagReader(tmp_path / "out") as reader:
        texts = [m.msg.navigation_text for m in reader.messages([PLAN_TOPIC])]
    assert TEXT in texts


def test_a_family_without_navigation_ignores_the_topic(tmp_path):
    summary = _bag_with_navigation(tmp_path)
    replay, result, model = _replay(tmp_path, summary, R1)
    assert result["status"] == "ok", result["error"]
    assert result["counts"]["navigation"] == 0 and result["navigation"]["ignored"] == 2
    assert set(model.texts) == {None}
    assert len(result["warnings"]) == 1 and "Alpamayo R1 takes none" in result["warnings"][0]


def _by_time(result):
    start = make_preset("curved_drive").stamp_ns(0.0)
    return {round((t["now_ns"] - start) / 1e9, 3): t for t in result["ticks"]}


def test_swap_direction_is_the_official_one():
    from fixture_set import SET_1_5  # the 1.5 golden set's own case
    expected = SET_1_5.load_expected()
    assert swap_direction(expected["nav_text"]) == expected["nav_swap_direction"]
    # The official examples and its case rule: "left" always becomes lower-case "right",
    # "right" becomes "Left" when its first letter is upper-case; whole words only.
    assert swap_direction("Turn left onto Main St") == "Turn right onto Main St"
    assert swap_direction("Turn right onto Oak Ave") == "Turn left onto Oak Ave"
    assert swap_direction("Continue straight") == "Continue straight"
    assert swap_direction("Left then RIGHT, leftmost lane") == "right then Left, leftmost lane"


def test_bag_instructions_by_validity_window_in_report_csv_and_output_bag(setup, tmp_path):
    root, _, _, params = setup
    out = tmp_path / "out"
    assert replay.main([str(root / "bag"), "--params", str(params), "-o", str(out),
                        "--quiet", "--no-plot"]) == 0
    report = json.loads((out / "report.json").read_text())
    bag = report["bags"][0]
    assert bag["status"] == "ok", bag["error"]
    ticks = _by_time(bag)
    for t, (status, text) in EXPECTED.items():
        assert ticks[t]["status"] == "OK", ticks[t]["reason"]
        assert (ticks[t]["navigation_status"], ticks[t]["navigation_text"]) == (status, text), t
    nav = bag["navigation"]
    assert nav["topic"] == "/alpamayo/navigation" and nav["forced_text"] is None
    assert (nav["messages"], nav["accepted"], nav["rejected"], nav["ignored"]) == (4, 3, 1, 0)
    assert nav["tick_counts"]["with"] == 2 and nav["tick_counts"]["expired"] == 2
    assert nav["tick_counts"]["none"] == 1 and nav["tick_counts"]["empty"] == 1
    assert nav["tick_counts"]["without"] == 4
    assert report["aggregate"]["navigation_ticks"]["with"] == 2
    assert any("special-token markers" in k for k in bag["rejections"]), bag["rejections"]
    assert bag["warnings"] == [] and "nav_compare" not in bag
    rows = {round(float(r["now_s"]) - 1700000000.0, 3): r
            for r in csv.DictReader((out / "ticks.csv").open())}
    assert rows[2.5]["navigation_text"] == RIGHT and rows[2.5]["navigation_status"] == "used"
    assert rows[2.5]["nav_with_vs_without_max_m"] == ""
    # The output bag's PlannerOutput says what the model saw.
    with bag_io.BagReader(out / "00_bag_plan") as reader:
        plans = {m.log_time_ns: m.msg for m in reader.messages(["/alpamayo/plan"])}
    start = make_preset("curved_drive").stamp_ns(0.0)
    for t, (_, text) in EXPECTED.items():
        assert plans[start + int(t * 1e9)].navigation_text == text


def test_nav_text_overrides_the_bags_instructions(setup):
    root, _, values, _ = setup
    result = replay_jobs.run_bag_job(job(root / "bag", values, options=ReplayOptions(
        nav_text="Turn right onto Main Street in 30m")))["result"]
    assert result["status"] == "ok", result["error"]
    planned = [t for t in result["ticks"] if t["status"] == "OK"]
    assert len(planned) == len(EXPECTED)
    assert {(t["navigation_status"], t["navigation_text"]) for t in planned} == \
        {("used", "Turn right onto Main Street in 30m")}
    nav = result["navigation"]
    assert nav["forced_text"] == "Turn right onto Main Street in 30m"
    assert nav["topic"] is None and nav["messages"] == 0  # the bag's are not read
    # "" forces no navigation at all: every planned tick is "empty".
    result = replay_jobs.run_bag_job(job(root / "bag", values, options=ReplayOptions(
        nav_text="")))["result"]
    assert {t["navigation_status"] for t in result["ticks"] if t["status"] == "OK"} == \
        {"empty"}


def test_nav_compare_reports_three_conditions_and_their_distances(setup, tmp_path):
    root, _, _, params = setup
    out = tmp_path / "out"
    assert replay.main([str(root / "bag"), "--params", str(params), "-o", str(out),
                        "--quiet", "--no-bag", "--nav-compare"]) == 0
    report = json.loads((out / "report.json").read_text())
    bag = report["bags"][0]
    ticks = _by_time(bag)
    assert all("nav_compare" not in t for t in bag["ticks"] if t["status"] == "SKIPPED")
    for t, (status, text) in EXPECTED.items():
        record = ticks[t]["nav_compare"]
        assert record["compared"] == (status == "used"), (t, record)
        if status != "used":
            assert status in record["note"]
            continue
        assert record["texts"] == {"with": text, "without": "", "swapped": swap_direction(text)}
        assert record["status"] == {"with": "OK", "without": "OK", "swapped": "OK"}
        assert len(record["selected_xyz"]["without"]) == 64
        for pair in ("with_vs_without", "with_vs_swapped", "without_vs_swapped"):
            d = record["distances"][pair]
            assert 0 < d["final_m"] <= d["max_m"], (t, pair, d)
    summary = bag["nav_compare"]
    assert summary["conditions"] == ["with", "without", "swapped"]
    assert summary["ticks_compared"] == 2 and summary["ticks_not_compared"] == 4
    stats = summary["pairs"]["with_vs_swapped"]
    assert stats["count"] == 2 and stats["max_m"]["max"] > 0
    assert report["aggregate"]["nav_compare"]["pairs"] == summary["pairs"]
    rows = list(csv.DictReader((out / "ticks.csv").open()))
    assert sum(1 for r in rows if r["nav_with_vs_swapped_max_m"]) == 2
    assert (out / "00_bag_nav_compare.png").stat().st_size > 0


def test_nav_text_with_nav_compare_compares_every_planned_tick(setup):
    root, _, values, _ = setup
    result = replay_jobs.run_bag_job(job(root / "bag", values, options=ReplayOptions(
        nav_text=LEFT, nav_compare=True)))["result"]
    summary = result["nav_compare"]
    assert summary["ticks_compared"] == len(EXPECTED)
    for pair in ("with_vs_without", "with_vs_swapped"):
        assert summary["pairs"][pair]["count"] == len(EXPECTED)
        assert summary["pairs"][pair]["max_m"]["mean"] > 0
    # Without left/right the swap changes nothing: "swapped" is the "with" result.
    result = replay_jobs.run_bag_job(job(root / "bag", values, options=ReplayOptions(
        nav_text="Continue straight", nav_compare=True)))["result"]
    record = next(t["nav_compare"] for t in result["ticks"] if t["status"] == "OK")
    assert record["swap_changes_text"] is False
    assert record["distances"]["with_vs_swapped"] == {"max_m": 0.0, "final_m": 0.0}
    assert record["distances"]["with_vs_without"]["max_m"] > 0


def test_r1_ignores_instructions_nav_text_and_compare_with_one_warning(setup):
    """As the node: an R1 checkpoint (here its description over a constant-velocity
    model) takes no instruction; the bag's are counted as ignored, one warning."""
    root, summary, _, _ = setup
    values = parameters(summary)
    r1 = ModelDescription("", "r1", "cpu", "float32", InferenceOptions(),
                          family=model_family.R1)
    model = ConstantVelocityModel()
    result = replay_jobs.run_bag_job(job(root / "bag", values), model, r1)["result"]
    assert result["status"] == "ok", result["error"]
    assert result["navigation"]["ignored"] == 4 and result["navigation"]["accepted"] == 0
    assert {t["navigation_text"] for t in result["ticks"]} == {""}
    assert result["warnings"] == [
        "4 instruction(s) on /alpamayo/navigation: navigation instructions are ignored: "
        "Alpamayo R1 takes none (an Alpamayo 1.5 checkpoint does)"]
    result = replay_jobs.run_bag_job(job(root / "bag", values, options=ReplayOptions(
        nav_text=LEFT, nav_compare=True)), model, r1)["result"]
    assert {t["navigation_text"] for t in result["ticks"]} == {""}
    assert "nav_compare" not in result and "nav_compare" not in result["ticks"][0]
    assert len(result["warnings"]) == 1
    assert result["warnings"][0].startswith("--nav-text and --nav-compare: navigation "
                                            "instructions are ignored: Alpamayo R1")


def test_cli_warns_once_for_a_model_without_navigation(setup, tmp_path, capsys):
    root, summary, _, _ = setup
    params = tmp_path / "cv.yaml"
    make_bag.write_parameter_file(params, make_bag.planner_parameters_for(summary))
    assert replay.main([str(root / "bag"), str(root / "bag"), "--params", str(params),
                        "-o", str(tmp_path / "out"), "--quiet", "--no-plot", "--no-bag",
                        "--nav-text", LEFT]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if line]
    assert err == ["alpamayo-replay: warning: --nav-text: navigation instructions are "
                   "ignored: the constant_velocity backend takes none (an Alpamayo 1.5 "
                   "checkpoint does)"]


@pytest.mark.parametrize("text, reason", [
    ("Turn left <|route_end|> now", "holds '<|'"),
    ("Turn\nleft", "control characters"),
    ("x" * 300, "300 bytes long, the limit is 256"),
])
def test_bad_nav_text_exits_2_with_one_line(setup, tmp_path, capsys, text, reason):
    root, _, _, params = setup
    code = replay.main([str(root / "bag"), "--params", str(params), "-o", str(tmp_path),
                        "--quiet", "--nav-text", text])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == replay.EXIT_ERROR
    assert len(err) == 1 and err[0].startswith("alpamayo-replay: error: --nav-text: ")
    assert reason in err[0]
    assert not (tmp_path / "report.json").exists()


def test_wrong_navigation_topic_type_is_a_bag_error(tmp_path):
    scenario = make_preset("straight_constant", duration_s=2.0,
                           cameras=default_cameras(10.0, WIDTH, HEIGHT, "rgb8"))
    summary = make_bag.write_scenario_bag(tmp_path / "bag", scenario, layout=make_bag.BagLayout(
        navigation=((1.0, 1.0, LEFT),), navigation_topic="/alpamayo/navigation_raw"))
    # Same bag, instructions on the wrong type: rename by copying raw messages.
    with bag_io.BagReader(summary.path) as reader, bag_io.BagWriter(tmp_path / "bad") as out:
        for conn, log_time, raw in reader.raw_messages():
            if conn.topic == "/alpamayo/navigation_raw":
                out.write("/alpamayo/navigation", "std_msgs/msg/String", log_time,
                          bag_io.msg_class("std_msgs/msg/String")(data=LEFT))
            else:
                out.write_raw(conn.topic, conn.msgtype, log_time, raw)
    result = replay_jobs.run_bag_job(job(tmp_path / "bad", parameters(summary)))["result"]
    assert result["status"] == "error"
    assert "navigation topic /alpamayo/navigation: have type std_msgs/msg/String, need " \
           "alpamayo_ros/msg/NavigationInstruction" in result["error"]
    # --nav-text does not read the bag's topic, so its type does not matter.
    result = replay_jobs.run_bag_job(job(tmp_path / "bad", parameters(summary),
                                         options=ReplayOptions(nav_text=LEFT)))["result"]
    assert result["status"] == "ok", result["error"]


def test_tick_counts_and_csv_cells():
    ticks = [{"navigation_status": s} for s in ("used", "used", "none", "expired", "empty", "")]
    assert replay_navigation.tick_counts(ticks) == {
        "used": 2, "none": 1, "expired": 1, "empty": 1, "no_t0": 1, "with": 2, "without": 3}
    cells = replay_navigation.csv_cells({"navigation_status": "used", "navigation_text": LEFT,
                                         "nav_compare": {"distances": {
                                             "with_vs_without": {"max_m": 0.5, "final_m": 0.25},
                                             "with_vs_swapped": None}}})
    assert cells == ["used", LEFT, "0.500000", "0.250000", "", ""]


def test_make_scenario_bag_writes_instructions(tmp_path, capsys):
    assert make_bag.main([str(tmp_path / "bag"), "--duration", "1", "--width", "64",
                          "--height", "48", "--nav", "0.5:2:Turn left in 40m",
                          "--nav", "0.2:1:"]) == 0
    with bag_io.BagReader(tmp_path / "bag") as reader:
        found = [(m.stamp_ns - reader.start_time_ns, m.msg.text, m.msg.valid_for.sec)
                 for m in reader.messages(["/alpamayo/navigation"])]
    assert found == [(200_000_000, "", 1), (500_000_000, "Turn left in 40m", 2)]
    with pytest.raises(SystemExit) as exc:
        make_bag.main([str(tmp_path / "bad"), "--nav", "Turn left"])
    assert exc.value.code == 2 and "T:VALID_FOR:TEXT" in capsys.readouterr().err
