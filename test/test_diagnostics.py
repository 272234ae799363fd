"""Planner health (ROS-free) and its conversion to diagnostic_msgs."""
import pytest

from alpamayo_ros.core.plan_result import ReasonCode
from alpamayo_ros.core.planner_health import (InputTracker, LatencyStats, Level,
                                              PlannerHealth, TickOutcome,
                                              inference_path_report)
from alpamayo_ros.core.types import InferencePath

S = 1_000_000_000


def _health(**kwargs):
    return PlannerHealth(["cam0", "cam1", "cam2", "cam6"], "odometry",
                         max_input_age_s=kwargs.get("max_age", 0.5),
                         max_camera_skew_s=kwargs.get("max_skew", 0.1))


def _feed(health, now_ns, rates=(10, 15, 20, 30), odom_hz=50, seconds=2.0, skew_ns=0):
    """Messages on a regular grid ending at now_ns, stamped at their receive time."""
    for slot, hz in enumerate(rates):
        n = int(seconds * hz)
        for k in range(n + 1):
            t = now_ns - int((n - k) * S / hz)
            health.record_camera(slot, t, t - (skew_ns if slot == 3 else 0))
    n = int(seconds * odom_hz)
    for k in range(n + 1):
        t = now_ns - int((n - k) * S / odom_hz)
        health.record_odometry(t, t)


def _by_name(reports):
    return {r.name: r for r in reports}


def test_rates_ages_and_ok_levels():
    health = _health()
    now = 100 * S
    _feed(health, now)
    health.record_outcome(TickOutcome.PLANNED, latency_s=0.3, model_time_s=0.2)
    reports = _by_name(health.reports(now + S // 10))
    for name, hz in (("cam0", 10), ("cam1", 15), ("cam2", 20), ("cam6", 30), ("odometry", 50)):
        assert reports[name].level is Level.OK
        assert float(reports[name].values["rate_hz"]) == pytest.approx(hz, rel=0.02)
        assert float(reports[name].values["age_s"]) == pytest.approx(0.1, abs=1e-6)
    assert reports["camera sync"].level is Level.OK
    assert reports["planner"].level is Level.OK


def test_stale_inputs_and_no_data():
    health = _health(max_age=0.5)
    now = 100 * S
    _feed(health, now)
    reports = _by_name(health.reports(now + S))  # 1 s later, nothing new
    assert reports["cam0"].level is Level.STALE
    assert "1.000 s old" in reports["cam0"].message
    fresh = _health()
    reports = _by_name(fresh.reports(now))
    assert reports["odometry"].level is Level.STALE
    assert reports["odometry"].message == "no message received yet"
    assert reports["camera sync"].level is Level.STALE
    assert reports["planner"].level is Level.STALE


def test_camera_skew_warns_above_the_limit():
    health = _health(max_skew=0.1)
    now = 100 * S
    _feed(health, now, skew_ns=150_000_000)
    report = _by_name(health.reports(now))["camera sync"]
    assert report.level is Level.WARN
    assert float(report.values["camera_skew_s"]) == pytest.approx(0.15)


def test_rejected_messages_warn_with_the_reason_and_the_warning_clears():
    health = _health()
    now = 100 * S
    _feed(health, now)
    health.reject_camera(2, "corrupt jpeg", now)
    report = _by_name(health.reports(now))["cam2"]
    assert report.level is Level.WARN and "corrupt jpeg" in report.message
    assert report.values["rejected"] == "1"
    # Good data goes on: 6 s later the rejection is history (counted, no longer a WARN).
    later = now + 6 * S
    _feed(health, later)
    report = _by_name(health.reports(later))["cam2"]
    assert report.level is Level.OK and report.values["rejected"] == "1"
    assert report.values["rejected_recently"] == "0"


def test_a_camera_whose_every_frame_is_rejected_says_why_not_stale():
    health = _health()
    now = 100 * S
    for k in range(10):
        health.reject_camera(1, "mono16: unsupported image encoding", now + k * S // 10)
    report = _by_name(health.reports(now + S))["cam1"]
    assert report.level is Level.ERROR
    assert report.message == "every message rejected (10): mono16: unsupported image encoding"
    # Frames that stop being accepted later: the error names the rejections, not staleness.
    _feed(health, now + 2 * S)
    for k in range(10):
        health.reject_camera(1, "zero stamp", now + 2 * S + k * S // 10)
    report = _by_name(health.reports(now + 3 * S))["cam1"]
    assert report.level is Level.ERROR and "rejected since: zero stamp" in report.message


def test_inputs_stamped_in_the_future_are_flagged():
    health = _health()
    now = 100 * S
    _feed(health, now)
    health.record_camera(3, now, now + 2 * S)
    report = _by_name(health.reports(now))["cam6"]
    assert report.level is Level.WARN
    assert report.message == "stamped 2.000 s ahead of the node clock (limit 0.500 s)"


def test_a_stopped_clock_is_reported_on_wall_time():
    health = _health()
    now = 100 * S
    _feed(health, now)
    assert _by_name(health.reports(now, wall_ns=5 * S))["node clock"].level is Level.OK
    assert _by_name(health.reports(now, wall_ns=6 * S))["node clock"].level is Level.OK
    stopped = _by_name(health.reports(now, wall_ns=8 * S))["node clock"]
    assert stopped.level is Level.WARN and "clock stopped" in stopped.message
    assert _by_name(health.reports(now + S, wall_ns=9 * S))["node clock"].level is Level.OK


def test_outcomes_are_grouped_by_reason_code():
    health = _health()
    for code in ("STALE_CAMERA", "STALE_CAMERA", "ODOMETRY_DISCONTINUITY"):
        health.record_outcome(TickOutcome.SKIPPED, "why", reason_code=ReasonCode[code])
    report = _by_name(health.reports(100 * S))["planner"]
    assert report.values["not_ok_STALE_CAMERA"] == "2"
    assert report.values["not_ok_ODOMETRY_DISCONTINUITY"] == "1"
    assert report.values["last_reason_code"] == "ODOMETRY_DISCONTINUITY"
    assert report.message.startswith("tick skipped (ODOMETRY_DISCONTINUITY)")


def test_planner_levels_follow_the_last_outcome_and_drops():
    health = _health()
    now = 100 * S
    health.record_outcome(TickOutcome.MODEL_ERROR, "CUDA out of memory")
    report = _by_name(health.reports(now))["planner"]
    assert report.level is Level.ERROR and "CUDA out of memory" in report.message
    health.record_outcome(TickOutcome.SKIPPED, "stale odometry")
    assert _by_name(health.reports(now))["planner"].level is Level.WARN
    health.record_outcome(TickOutcome.PLANNED, latency_s=0.5)
    health.record_dropped_tick()
    health.record_dropped_tick()
    report = _by_name(health.reports(now))["planner"]
    assert report.level is Level.WARN and "2 tick(s) dropped" in report.message
    assert report.values["dropped_ticks"] == "2"
    # Drops are reported once; the total stays in the values.
    report = _by_name(health.reports(now))["planner"]
    assert report.level is Level.OK and report.values["dropped_ticks"] == "2"
    assert report.values["last_model_error"] == "CUDA out of memory"


def test_latency_percentiles():
    stats = LatencyStats(capacity=100)
    assert stats.percentile(50) is None
    for k in range(1, 101):
        stats.add(k / 100.0)
    assert stats.percentile(50) == pytest.approx(0.505)
    assert stats.percentile(99) == pytest.approx(0.9901)
    stats.add(5.0)  # evicts 0.01
    assert len(stats) == 100 and stats.percentile(100) == 5.0


def test_rate_window_forgets_old_arrivals_and_time_going_backwards():
    tracker = InputTracker("x", window_s=1.0)
    for k in range(11):
        tracker.record(k * S // 10, k * S // 10)
    assert tracker.rate_hz(S) == pytest.approx(10.0)
    assert tracker.rate_hz(10 * S) == 0.0
    tracker.record(20 * S, 20 * S)
    tracker.record(5 * S, 5 * S)  # sim clock jumped back: old arrivals are dropped
    assert tracker.rate_hz(5 * S) == 0.0


def test_diagnostic_array_conversion():
    pytest.importorskip("diagnostic_msgs")
    from diagnostic_msgs.msg import DiagnosticStatus

    from alpamayo_ros.ros.diagnostics import to_diagnostic_array

    health = _health()
    health.record_outcome(TickOutcome.MODEL_ERROR, "boom")
    array = to_diagnostic_array(health.reports(7 * S), 7 * S, hardware_id="planner",
                                prefix="alpamayo_planner")
    assert array.header.stamp.sec == 7 and array.header.stamp.nanosec == 0
    by_name = {s.name: s for s in array.status}
    planner = by_name["alpamayo_planner: planner"]
    assert planner.level == DiagnosticStatus.ERROR
    assert planner.hardware_id == "planner"
    assert {kv.key: kv.value for kv in planner.values}["model_errors"] == "1"
    assert by_name["alpamayo_planner: odometry"].level == DiagnosticStatus.STALE


@pytest.mark.parametrize("configured_x, level", [(0.0, Level.WARN), (-1.4, Level.OK)])
def test_base_offset_estimate_is_reported_and_a_mismatch_warns(configured_x, level):
    """Odometry of the actor origin 1.4 m ahead of the rear axle (carla-ros-bridge): the
    diagnostics publish the estimate, and warn when core.base_offset_xyz disagrees."""
    from test_core_base_offset import drive
    stamps, xyz, quat = drive(rate_hz=50.0)
    health = PlannerHealth(["cam0", "cam1", "cam2", "cam6"], "odometry", max_input_age_s=0.5,
                           max_camera_skew_s=0.1, base_offset_xyz=(configured_x, 0.0, 0.0))
    for stamp, p, q in zip(stamps, xyz, quat):
        health.record_odometry_pose(int(stamp), p, q)
    report = _by_name(health.reports(int(stamps[-1])))["base offset"]
    assert report.level is level
    assert float(report.values["estimated_x_m"]) == pytest.approx(-1.4, abs=0.05)
    if level is Level.WARN:
        assert "x must be negative" in report.message
        assert health.base_offset_warning() == report.message
    health.restart_odometry()
    report = _by_name(health.reports(int(stamps[-1])))["base offset"]
    assert report.level is Level.OK and "not estimated yet" in report.message


def test_the_inference_path_is_reported_and_its_problem_is_an_error():
    fine = inference_path_report(InferencePath("fast"))
    assert (fine.name, fine.level, fine.values) == ("model path", Level.OK,
                                                    {"inference_path": "fast"})
    why = "fast path switched off at warm-up: CUDA graph capture failed: ..."
    fallback = inference_path_report(InferencePath("eager", why))
    assert fallback.level == Level.ERROR and fallback.message == why
    assert fallback.values == {"inference_path": "eager", "inference_problem": why}
    assert inference_path_report(InferencePath()).values == {"inference_path": "none"}
