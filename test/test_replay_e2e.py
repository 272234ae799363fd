"""Stepped-time replay end to end on generated bags (constant-velocity backend)."""
import json
import random
import time

import numpy as np
import pytest
import yaml

from alpamayo_ros.core.kinematic_model import ConstantVelocityModel
from alpamayo_ros.bag import bag_io
from alpamayo_ros.tools import replay
from alpamayo_ros.replay import engine as replay_engine, jobs as replay_jobs, report as replay_report
from alpamayo_ros.core import outputs
from alpamayo_ros.replay.outputs import PATH_ODOM_TOPIC, PATH_TOPIC, PLAN_TOPIC
from scenario_bags import job, parameters, write_bag


@pytest.fixture(scope="module")
def straight_bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("bags") / "straight"
    return path, write_bag(path, "straight_constant", duration_s=9.0, speed=10.0)


@pytest.fixture(scope="module")
def circle_bag(tmp_path_factory):
    path = tmp_path_factory.mktemp("bags") / "circle"
    return path, write_bag(path, "circle_8mps", duration_s=9.0, storage="sqlite3",
                           encoding="jpeg")


def _report(outcomes, values):
    return replay_report.build_report(values, replay_engine.ReplayOptions(), outcomes)


def test_constant_velocity_on_known_motion_scores_near_zero(straight_bag, circle_bag):
    for path, summary in (straight_bag, circle_bag):
        values = parameters(summary, rate_hz=2.0)
        out = replay_jobs.run_bag_job(job(path, values))
        res = out["result"]
        assert res["status"] == "ok", res["error"]
        ticks = res["ticks"]
        # Ticks every 0.5 s of header-stamp time on the absolute grid.
        assert np.all(np.diff([t["now_ns"] for t in ticks]) == 500_000_000)
        ok = [t for t in ticks if t["status"] == "OK"]
        assert len(ok) >= 14
        # The first ticks have no 1.5 s history yet: skipped with a reason.
        assert ticks[0]["status"] == "SKIPPED" and ticks[0]["reason"]
        scored = [t for t in ok if t["metrics"] and t["metrics"]["6.4"]["min_ade"] is not None]
        assert len(scored) >= 3
        for t in scored:
            for h in ("1", "3", "6.4"):
                assert t["metrics"][h]["min_ade"] < 1e-3, (path.name, t["tick"], h)
                assert t["metrics"][h]["min_fde"] < 1e-3
        # Ticks near the end have no 6.4 s ground truth: no metric, and a note says why.
        tail = [t for t in ok if t["metrics"] and t["metrics"]["6.4"]["min_ade"] is None]
        assert tail and all("ground truth ends" in t["metrics_note"] for t in tail)
        speed = 10.0 if path.name == "straight" else 8.0
        assert all(abs(t["v0"] - speed) < 1e-3 for t in ok)


def test_curved_drive_metrics_are_positive_and_grow_with_horizon(tmp_path):
    summary = write_bag(tmp_path / "curve", "curved_drive", duration_s=16.0)
    res = replay_jobs.run_bag_job(job(tmp_path / "curve", parameters(summary)))["result"]
    m = res["metrics"]
    assert m["6.4"]["count"] > 0
    assert 0 < m["1"]["mean_min_ade"] < m["3"]["mean_min_ade"] < m["6.4"]["mean_min_ade"]


class SleepyModel(ConstantVelocityModel):
    """Same outputs, random wall-clock duration per call."""

    def __init__(self, seed: int):
        super().__init__()
        self._rng = random.Random(seed)

    def predict(self, model_input, options=None, initial_noise=None):
        time.sleep(self._rng.uniform(0.0, 0.03))
        return super().predict(model_input, options) if options else super().predict(model_input)


def test_same_bag_same_report_bytes_and_machine_speed_independent(straight_bag):
    path, summary = straight_bag
    values = parameters(summary, rate_hz=4.0)
    texts = []
    for model in (None, None, SleepyModel(1), SleepyModel(2)):
        rep = replay_engine.BagReplay(job(path, values), model=model)
        result, timings = rep.run()
        texts.append(replay_report.report_json(replay_report.without_timings(
            _report([{"result": result, "timings": timings}], values))))
    assert len(set(texts)) == 1
    # Timings are there, but only in the separate section.
    full = _report([{"result": result, "timings": timings}], values)
    assert full["timings"]["bags"][0]["ticks"][0]["wall_s"] >= 0.0
    assert "wall_s" not in json.dumps(replay_report.without_timings(full))


def test_mcap_and_sqlite3_inputs_give_the_same_ticks(tmp_path):
    summaries = {s: write_bag(tmp_path / s, "circle_8mps", duration_s=5.0, storage=s)
                 for s in ("mcap", "sqlite3")}
    results = [replay_jobs.run_bag_job(job(tmp_path / s, parameters(summaries[s])))["result"]
               for s in ("mcap", "sqlite3")]
    assert results[0]["storage"] == "mcap" and results[1]["storage"] == "sqlite3"
    assert json.dumps(results[0]["ticks"]) == json.dumps(results[1]["ticks"])


def test_header_stamps_not_receive_times_decide_what_a_tick_sees(tmp_path):
    from alpamayo_ros.tools.make_bag import BagLayout
    on_time = write_bag(tmp_path / "a", duration_s=5.0)
    late = write_bag(tmp_path / "b", duration_s=5.0,
                     layout=BagLayout(camera_latency_s=0.2, odometry_latency_s=0.05))
    ra = replay_jobs.run_bag_job(job(tmp_path / "a", parameters(on_time)))["result"]
    rb = replay_jobs.run_bag_job(job(tmp_path / "b", parameters(late)))["result"]
    assert json.dumps(ra["ticks"]) == json.dumps(rb["ticks"])
    assert rb["counts"]["late_messages"] == 0
    # Latency beyond max_delay: the messages arrive after their tick ran and are counted.
    opts = replay_engine.ReplayOptions(max_delay_s=0.1)
    rc = replay_jobs.run_bag_job(job(tmp_path / "b", parameters(late), options=opts))["result"]
    assert rc["counts"]["late_messages"] > 0


def test_cli_writes_report_csv_png_and_a_readable_output_bag(straight_bag, tmp_path):
    path, summary = straight_bag
    params = tmp_path / "params.yaml"
    from alpamayo_ros.tools.make_bag import planner_parameters_for, write_parameter_file
    write_parameter_file(params, planner_parameters_for(summary))
    out = tmp_path / "out"
    code = replay.main([str(path), "--params", str(params), "-o", str(out), "--quiet",
                        "--seed", "3"])
    assert code == 0
    report = json.loads((out / "report.json").read_text())
    bag = report["bags"][0]
    assert report["parameters"]["model.seed"] == 3
    lines = (out / "ticks.csv").read_text().splitlines()
    assert len(lines) == 1 + len(bag["ticks"])
    assert (out / "00_straight.png").stat().st_size > 1000
    assert (out / "summary.png").stat().st_size > 1000
    plan_bag = out / "00_straight_plan"
    meta = yaml.safe_load((plan_bag / "metadata.yaml").read_text())
    assert meta["rosbag2_bagfile_information"]["version"] == 8
    with bag_io.BagReader(plan_bag) as reader:
        counts = reader.message_counts
        plans = list(reader.messages([PLAN_TOPIC]))
        paths = list(reader.messages([PATH_TOPIC]))
    ok = [t for t in bag["ticks"] if t["status"] == "OK"]
    assert counts[PLAN_TOPIC] == len(bag["ticks"])
    assert counts[PATH_TOPIC] == counts[PATH_ODOM_TOPIC] == len(ok)
    # Every topic the node publishes (core.outputs.OUTPUTS, markers enabled by default).
    assert set(counts) == {"/" + row.topic
                           for row in outputs.enabled_outputs(report["parameters"])}
    assert counts["/" + outputs.COC_TOPIC] == counts["/" + outputs.MARKERS_TOPIC] == len(ok)
    first_ok = next(p.msg for p in plans if p.msg.status == 0)
    assert bag_io.stamp_to_ns(first_ok.header.stamp) == ok[0]["t0_ns"]
    cand = first_ok.candidates[0]
    assert len(cand.poses) == 64
    assert cand.time_from_t0[0].nanosec == 100_000_000
    np.testing.assert_allclose(cand.poses[-1].position.x, ok[0]["candidates"][0]["xyz"][-1][0],
                               atol=1e-6)
    assert len(paths[0].msg.poses) == 64
    assert {p.msg.status for p in plans} >= {0, 1}


def test_jobs_2_gives_the_same_reports_as_jobs_1(straight_bag, circle_bag, tmp_path):
    jobs = []
    for path, summary in (circle_bag, straight_bag):
        jobs.append(job(path, parameters(summary)))
    serial = replay_jobs.run_jobs(jobs, 1)
    parallel = replay_jobs.run_jobs(jobs, 2)
    assert [o["result"]["bag"] for o in parallel] == [str(circle_bag[0]), str(straight_bag[0])]
    assert json.dumps([o["result"] for o in serial]) == json.dumps([o["result"] for o in parallel])
