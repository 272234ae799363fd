"""Regression comparison of replay reports: pure functions, diff text, exit codes."""
import copy
import json

import pytest

from alpamayo_ros.tools import regression as rg


def _tick(i, status="OK", x_end=10.0, coc="Keep lane.", ade=0.5):
    xyz = [[x_end * (k + 1) / 64.0, 0.0, 0.0] for k in range(64)]
    return {"tick": i, "epoch": 0, "now_ns": 1_000_000_000 * (i + 10), "t0_ns": None,
            "status": status, "reason": "" if status == "OK" else "inputs stale",
            "v0": 10.0, "selected_index": 0,
            "candidates": [{"xyz": xyz, "valid": True, "invalid_reason": "", "coc": coc,
                            "coc_token_count": 3, "coc_truncated": False}]
            if status == "OK" else [],
            "metrics": {"1": {"min_ade": ade, "min_fde": ade * 2, "best_sample": 0}}
            if status == "OK" else None, "metrics_note": ""}


def _report(ticks=None, fingerprint="abc", model_s=0.1, ade=0.5):
    ticks = ticks if ticks is not None else [_tick(i, ade=ade) for i in range(3)]
    metrics = {"1": {"count": sum(1 for t in ticks if t["metrics"]),
                     "mean_min_ade": ade, "mean_min_fde": 2 * ade}}
    return {"format": "alpamayo_replay_report/1",
            "bags": [{"bag": "/data/run1", "status": "ok", "error": "", "ticks": ticks,
                      "metrics": metrics}],
            "aggregate": {"metrics": copy.deepcopy(metrics)},
            "timings": {"hardware": {"fingerprint": fingerprint, "cpu": "x", "gpu": ""},
                        "bags": [{"ticks": [{"tick": t["tick"], "model_total_s": model_s}
                                            for t in ticks]}]}}


def test_identical_reports_pass():
    res = rg.compare_reports(_report(), _report())
    assert res.passed and res.ticks_compared == 3 and not res.latency_compared
    assert "PASS" in rg.format_findings(res)


def test_trajectory_deviation_beyond_tolerance_is_a_regression():
    cur = _report([_tick(0), _tick(1, x_end=10.3), _tick(2)])
    res = rg.compare_reports(cur, _report(), rg.Tolerances(trajectory_m=0.1))
    assert not res.passed
    assert res.max_trajectory_deviation_m == pytest.approx(0.3)
    text = rg.format_findings(res)
    assert "REGRESSION" in text and "tick 1" in text and "0.3000 m > tolerance 0.1 m" in text
    assert rg.compare_reports(cur, _report(), rg.Tolerances(trajectory_m=0.5)).passed


def test_coc_change_fails_unless_ignored():
    cur = _report([_tick(0, coc="Stop for the pedestrian."), _tick(1), _tick(2)])
    res = rg.compare_reports(cur, _report())
    assert not res.passed and "CoC changed" in rg.format_findings(res)
    assert rg.compare_reports(cur, _report(), rg.Tolerances(ignore_coc=True)).passed


def test_metric_worsening_and_status_loss_are_regressions():
    worse = _report(ade=0.7)
    res = rg.compare_reports(worse, _report(ade=0.5),
                             rg.Tolerances(metric_abs=0.05, metric_rel=0.1))
    assert any("mean minADE 0.5000 -> 0.7000 m" in f.message for f in res.regressions)
    # Within tolerance: passes (and a note records the change).
    ok = rg.compare_reports(_report(ade=0.52), _report(ade=0.5),
                            rg.Tolerances(metric_abs=0.05))
    assert ok.passed and any("minADE" in f.message for f in ok.findings)
    # Better is never a regression.
    assert rg.compare_reports(_report(ade=0.2), _report(ade=0.5)).passed
    lost = _report([_tick(0), _tick(1, status="SKIPPED"), _tick(2)])
    res = rg.compare_reports(lost, _report())
    assert any("status OK -> SKIPPED" in f.message for f in res.regressions)


def test_latency_is_reported_and_compared_only_when_asked():
    """Same bag, seed and trajectories: machine load alone never fails the verdict."""
    slow = _report(model_s=0.2)
    res = rg.compare_reports(slow, _report(model_s=0.1))
    assert res.passed and not res.latency_compared
    assert any("mean model time 100.0 -> 200.0 ms (reported, not compared)" in f.message
               for f in res.findings)
    asked = rg.Tolerances(compare_latency=True)
    res = rg.compare_reports(slow, _report(model_s=0.1), asked)
    assert res.latency_compared
    assert any("mean model time 100.0 -> 200.0 ms" in f.message for f in res.regressions)
    other_hw = _report(model_s=0.2, fingerprint="zzz")
    res = rg.compare_reports(other_hw, _report(model_s=0.1), asked)
    assert res.passed and not res.latency_compared
    assert any("hardware differs" in f.message for f in res.findings)


def test_cli_compares_latency_only_with_the_flag(tmp_path):
    golden, slow = tmp_path / "g.json", tmp_path / "s.json"
    golden.write_text(json.dumps(_report(model_s=0.1)))
    slow.write_text(json.dumps(_report(model_s=0.2)))
    assert rg.main([str(slow), str(golden)]) == 0
    assert rg.main([str(slow), str(golden), "--compare-latency"]) == 1


def test_incomparable_reports_raise():
    other = _report()
    other["bags"][0]["bag"] = "/data/other"
    with pytest.raises(rg.ReportError, match="bag lists differ"):
        rg.compare_reports(_report(), other)
    other = _report()
    other["format"] = "something/2"
    with pytest.raises(rg.ReportError, match="report formats differ"):
        rg.compare_reports(_report(), other)


def test_cli_exit_codes(tmp_path, capsys):
    golden, same, worse = tmp_path / "g.json", tmp_path / "s.json", tmp_path / "w.json"
    golden.write_text(json.dumps(_report()))
    same.write_text(json.dumps(_report()))
    worse.write_text(json.dumps(_report([_tick(0, x_end=12.0), _tick(1), _tick(2)])))
    assert rg.main([str(same), str(golden)]) == 0
    assert rg.main([str(worse), str(golden)]) == 1
    assert "REGRESSION" in capsys.readouterr().out
    (tmp_path / "bad.json").write_text("{not json")
    assert rg.main([str(same), str(tmp_path / "bad.json")]) == 2
    assert rg.main([str(tmp_path / "missing.json"), str(golden)]) == 2
