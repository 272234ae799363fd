"""Replay with the real model code on a tiny random checkpoint: determinism and regression."""
import json

import pytest

from alpamayo_ros.tools import make_bag, regression, replay
from alpamayo_ros.replay import jobs as replay_jobs
from alpamayo_ros.sim.scenario import default_cameras, make_preset
from scenario_bags import job, parameters, write_bag

pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
    from alpamayo_ros.model.tiny_checkpoint import write_tiny_checkpoint
    root = tmp_path_factory.mktemp("tiny")
    checkpoint = write_tiny_checkpoint(root / "model", seed=0)
    summary = write_bag(root / "bag", "curved_drive", duration_s=3.0)
    extra = {"model.backend": "alpamayo", "model.checkpoint_dir": str(checkpoint),
             "model.device": "cpu", "model.dtype": "float32", "model.max_coc_tokens": 16,
             "model.seed": 0}
    return root, summary, extra


def test_same_seed_same_report_other_seed_other_plans(tiny_setup):
    root, summary, extra = tiny_setup
    values = parameters(summary, rate_hz=1.0, extra=extra)
    first = replay_jobs.run_bag_job(job(root / "bag", values))["result"]
    second = replay_jobs.run_bag_job(job(root / "bag", values))["result"]
    assert first["status"] == "ok", first["error"]
    ok = [t for t in first["ticks"] if t["status"] in ("OK", "INVALID_OUTPUT")]
    assert len(ok) >= 2, [t["reason"] for t in first["ticks"]]
    assert all(len(t["candidates"][0]["xyz"]) == 64 for t in ok)
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)
    other = replay_jobs.run_bag_job(job(root / "bag", dict(values, **{"model.seed": 1})))["result"]
    assert json.dumps(other["ticks"]) != json.dumps(first["ticks"])


def test_cli_regression_against_own_golden_passes_and_perturbed_fails(tiny_setup, tmp_path):
    root, summary, extra = tiny_setup
    params = tmp_path / "params.yaml"
    make_bag.write_parameter_file(params, make_bag.planner_parameters_for(
        summary, backend="alpamayo", rate_hz=1.0, extra=extra))
    base = [str(root / "bag"), "--params", str(params), "--quiet", "--no-plot", "--no-bag"]
    assert replay.main(base + ["-o", str(tmp_path / "golden")]) == 0
    golden = tmp_path / "golden" / "report.json"
    assert replay.main(base + ["-o", str(tmp_path / "run2"), "--golden", str(golden)]) == 0
    # A golden whose first planned trajectory is 1 m off: the same run now regresses.
    report = json.loads(golden.read_text())
    tick = next(t for t in report["bags"][0]["ticks"] if t["candidates"])
    tick["candidates"][0]["xyz"][-1][0] += 1.0
    bad = tmp_path / "bad_golden.json"
    bad.write_text(json.dumps(report))
    assert replay.main(base + ["-o", str(tmp_path / "run3"), "--golden", str(bad)]) == \
        regression.EXIT_REGRESSION


def test_frames_below_the_models_minimum_size_skip_the_tick_not_crash_the_model(tiny_setup):
    """8x8 px cameras (the scenario renders no smaller): every tick that gets that far skips with SIZE_MISMATCH naming the
    size and the model's minimum; the model is never called with them (no MODEL_ERROR)."""
    from alpamayo_ros.core.model_input import MIN_FRAME_SIDE
    root, _, extra = tiny_setup
    scenario = make_preset("curved_drive", duration_s=3.0,
                           cameras=default_cameras(10.0, 8, 8, "rgb8"))
    summary = make_bag.write_scenario_bag(root / "bag_8px", scenario)
    result = replay_jobs.run_bag_job(job(root / "bag_8px", parameters(
        summary, rate_hz=2.0, extra=extra)))["result"]
    assert result["status"] == "ok", result["error"]
    codes = result["reason_code_counts"]
    assert "MODEL_ERROR" not in codes and codes.get("SIZE_MISMATCH", 0) >= 2, codes
    small = [t for t in result["ticks"] if t["reason_code"] == "SIZE_MISMATCH"]
    assert f"8x8 px (WxH) are smaller than the model accepts ({MIN_FRAME_SIDE} px" in \
        small[0]["reason"]
