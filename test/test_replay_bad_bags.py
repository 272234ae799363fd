"""Bad bags: missing topics, wrong types, truncated files, gaps, time jumps, bad messages."""
import json

import pytest

from alpamayo_ros.bag import bag_io
from alpamayo_ros.tools import make_bag, replay
from alpamayo_ros.replay import jobs as replay_jobs
from scenario_bags import job, parameters, write_bag

ODO = make_bag.DEFAULT_ODOMETRY_TOPIC
START_NS = 1_700_000_000_000_000_000


def _run(path, values, **kwargs):
    return replay_jobs.run_bag_job(job(path, values, **kwargs))["result"]


def _cli(tmp_path, bag, summary, extra_args=()):
    params = tmp_path / "params.yaml"
    make_bag.write_parameter_file(params, make_bag.planner_parameters_for(summary))
    out = tmp_path / "out"
    code = replay.main([str(bag), "--params", str(params), "-o", str(out), "--quiet",
                        "--no-plot", *extra_args])
    return code, out


def test_missing_camera_topic_is_a_clear_error_with_exit_2(tmp_path, capsys):
    good = write_bag(tmp_path / "good", duration_s=1.0)
    cam2 = good.camera_topics[2]
    write_bag(tmp_path / "bag", duration_s=1.0, faults=make_bag.BagFaults(drop_topics=(cam2,)))
    res = _run(tmp_path / "bag", parameters(good))
    assert res["status"] == "error"
    assert f"camera topic {cam2} (slot 2, index 2) is not in the bag" in res["error"]
    code, out = _cli(tmp_path, tmp_path / "bag", good)
    assert code == 2
    assert "is not in the bag" in capsys.readouterr().err
    # The report is still written, with the bag marked as an error.
    report = json.loads((out / "report.json").read_text())
    assert report["aggregate"]["bags_with_errors"] == 1


def test_wrong_message_type_and_transport_mismatch(tmp_path):
    good = write_bag(tmp_path / "good", duration_s=1.0)
    write_bag(tmp_path / "bag", duration_s=1.0,
              faults=make_bag.BagFaults(wrong_type_topic=ODO))
    res = _run(tmp_path / "bag", parameters(good))
    assert res["status"] == "error"
    assert f"odometry topic {ODO}: have type std_msgs/msg/String, need nav_msgs/msg/Odometry" \
        in res["error"]
    # Parameters saying "compressed" for a raw Image topic.
    values = parameters(good, extra={"camera_transports": ["raw", "compressed", "raw", "raw"]})
    res = _run(tmp_path / "good", values)
    assert res["status"] == "error"
    assert "have type sensor_msgs/msg/Image, need sensor_msgs/msg/CompressedImage" in res["error"]
    assert "camera_transports[1]" in res["error"]


@pytest.mark.parametrize("storage,suffix", [("mcap", ".mcap"), ("sqlite3", ".db3")])
def test_truncated_bag_gives_error_not_crash(tmp_path, storage, suffix):
    summary = write_bag(tmp_path / "bag", duration_s=4.0, storage=storage)
    data_file = next((tmp_path / "bag").glob("*" + suffix))
    raw = data_file.read_bytes()
    data_file.write_bytes(raw[: len(raw) // 2])
    res = _run(tmp_path / "bag", parameters(summary))
    assert res["status"] == "error"
    assert "bag" in res["error"] and str(tmp_path / "bag") in res["error"]
    code, out = _cli(tmp_path, tmp_path / "bag", summary)
    assert code == 2
    assert (out / "report.json").exists() and (out / "ticks.csv").exists()


def test_missing_bag_directory_is_an_error(tmp_path):
    summary = write_bag(tmp_path / "good", duration_s=1.0)
    res = _run(tmp_path / "nope", parameters(summary))
    assert res["status"] == "error" and "does not exist" in res["error"]


def test_odometry_gap_skips_ticks_and_never_scores_across_it(tmp_path):
    summary = write_bag(tmp_path / "bag", "curved_drive", duration_s=14.0,
                        faults=make_bag.BagFaults(gaps=((ODO, 6.0, 7.0),)))
    res = _run(tmp_path / "bag", parameters(summary, rate_hz=5.0))
    assert res["status"] == "ok"
    gap_lo, gap_hi = START_NS + 6_000_000_000, START_NS + 7_000_000_000
    in_gap = [t for t in res["ticks"] if gap_lo + 600_000_000 <= t["now_ns"] < gap_hi]
    assert in_gap and all(t["status"] == "SKIPPED" and "odometry" in t["reason"] for t in in_gap)
    for t in res["ticks"]:
        if t["status"] != "OK":
            assert t["metrics"] is None
            continue
        future_hits_gap = t["t0_ns"] < gap_hi and t["t0_ns"] + 6_400_000_000 > gap_lo
        if future_hits_gap:
            assert t["metrics"] is None and "gap" in t["metrics_note"], t
    assert any(t["metrics"] for t in res["ticks"])  # ticks after the gap are scored again


def test_camera_gap_gives_per_tick_skip_reason(tmp_path):
    cam6 = make_bag.camera_topic(6, "rgb8")
    summary = write_bag(tmp_path / "bag", duration_s=8.0,
                        faults=make_bag.BagFaults(gaps=((cam6, 4.0, 6.0),)))
    res = _run(tmp_path / "bag", parameters(summary))
    skipped = [t for t in res["ticks"] if START_NS + 4_500_000_000 <= t["now_ns"]
               < START_NS + 6_000_000_000]
    assert skipped and all(t["status"] == "SKIPPED" for t in skipped)
    assert all(t["reason"] for t in skipped)
    # The core names the stale input: camera 6 is silent, t0 stays pinned to its last frame.
    assert {t["reason_code"] for t in skipped} == {"STALE_CAMERA"}
    assert all("front_tele_30fov" in t["reason"] for t in skipped)
    assert res["reason_code_counts"]["STALE_CAMERA"] == len(skipped)


@pytest.mark.parametrize("offset", [-20.0, 30.0])
def test_time_jump_starts_a_new_epoch_using_only_post_jump_data(tmp_path, offset):
    summary = write_bag(tmp_path / "bag", duration_s=12.0,
                        faults=make_bag.BagFaults(time_jump=(5.0, offset)))
    res = _run(tmp_path / "bag", parameters(summary, rate_hz=5.0))
    assert res["status"] == "ok"
    epochs = res["epochs"]
    assert len(epochs) == 2 and "time jump" in epochs[1]["reason"]
    jump_start = START_NS + int((5.0 + offset) * 1e9)
    assert epochs[1]["first_stamp_ns"] == jump_start
    after = [t for t in res["ticks"] if t["epoch"] == 1]
    assert after[0]["now_ns"] >= jump_start
    ok_after = [t for t in after if t["status"] == "OK"]
    assert ok_after, "the post-jump part must be planned again"
    # 1.5 s of post-jump history is needed: nothing earlier may be OK.
    assert all(t["t0_ns"] - 1_500_000_000 >= jump_start - 50_000_000 for t in ok_after)
    # Before the jump the ticks stop at the old time line; their metrics use only it.
    before = [t for t in res["ticks"] if t["epoch"] == 0]
    assert max(t["now_ns"] for t in before) <= START_NS + 5_000_000_000
    scored = [t for t in before + after
              if t["metrics"] and t["metrics"]["1"]["min_ade"] is not None]
    assert any(t["epoch"] == 0 for t in scored) and any(t["epoch"] == 1 for t in scored)
    for t in scored:
        # Straight constant speed: a truth mixing both time lines would not be ~0.
        assert t["metrics"]["1"]["min_ade"] < 1e-3


def test_undecodable_messages_are_rejected_and_counted(tmp_path):
    """Raw images whose data size does not match step x height never reach the core."""
    summary = write_bag(tmp_path / "src", duration_s=4.0)
    bad_topic = summary.camera_topics[1]
    with bag_io.BagReader(tmp_path / "src") as reader, \
            bag_io.BagWriter(tmp_path / "bag", "mcap") as writer:
        for m in reader.messages():
            msg = m.msg
            if m.topic == bad_topic:
                msg.data = msg.data[: len(msg.data) // 2]
            writer.write(m.topic, m.msgtype, m.log_time_ns, msg)
    res = _run(tmp_path / "bag", parameters(summary))
    assert res["status"] == "ok"
    assert res["counts"]["rejected"] == summary.message_counts[bad_topic]
    assert any(bad_topic in k and "need" in k for k in res["rejections"])
    assert all(t["status"] == "SKIPPED" for t in res["ticks"])
    assert any("front_wide_120fov" in t["reason"] for t in res["ticks"])


def test_compressed_images_are_checked_like_the_node_does(tmp_path):
    """A CompressedImage whose data contradicts its format is refused on arrival (the
    node's check, core.image_decode.checked_compressed_image), not at decode time."""
    summary = write_bag(tmp_path / "src", duration_s=4.0, encoding="jpeg")
    bad_topic = summary.camera_topics[1]
    with bag_io.BagReader(tmp_path / "src") as reader, \
            bag_io.BagWriter(tmp_path / "bag", "mcap") as writer:
        for m in reader.messages():
            msg = m.msg
            if m.topic == bad_topic:
                msg.format = "png"  # the data is JPEG
            writer.write(m.topic, m.msgtype, m.log_time_ns, msg)
    res = _run(tmp_path / "bag", parameters(summary))
    assert res["status"] == "ok"
    assert res["counts"]["rejected"] == summary.message_counts[bad_topic]
    assert any(k.startswith(f"{bad_topic}: CompressedImage says png")
               for k in res["rejections"])
    assert all(t["status"] == "SKIPPED" for t in res["ticks"])
    assert any("front_wide_120fov" in t["reason"] for t in res["ticks"])


def test_errors_name_the_bag_once_and_jobs_must_be_positive(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    make_bag.write_parameter_file(params, make_bag.planner_parameters_for(
        write_bag(tmp_path / "ok", duration_s=2.0), rate_hz=2.0))
    missing = tmp_path / "bags" / "awf"
    code = replay.main([str(missing), "--params", str(params), "-o", str(tmp_path / "out"),
                        "--quiet", "--no-plot"])
    err = capsys.readouterr().err
    assert code == 2
    line = next(ln for ln in err.splitlines() if "does not exist" in ln)
    assert line.count(str(missing)) == 1, line
    with pytest.raises(SystemExit) as info:
        replay.main([str(missing), "--params", str(params), "-o", str(tmp_path / "o2"),
                     "--jobs", "0"])
    assert info.value.code == 2
    assert "--jobs: have 0, need an integer >= 1" in capsys.readouterr().err


def test_a_relocalisation_jump_never_gives_an_ok_plan_across_it(tmp_path):
    """A 100 m jump of the odometry at 5 s: while the jump lies in a tick's history window
    the tick is skipped as ODOMETRY_DISCONTINUITY; every OK plan has a sane v0."""
    summary = write_bag(tmp_path / "bag", "straight_constant", duration_s=10.0, speed=10.0,
                        faults=make_bag.BagFaults(position_jump=(5.0, (100.0, 0.0, 0.0))))
    res = _run(tmp_path / "bag", parameters(summary, rate_hz=10.0))
    ticks = res["ticks"]
    t_jump = START_NS + 5_000_000_000
    across = [t for t in ticks if t_jump + 100_000_000 <= t["now_ns"] <= t_jump + 1_400_000_000]
    assert across and {t["reason_code"] for t in across} == {"ODOMETRY_DISCONTINUITY"}
    ok = [t for t in ticks if t["status"] == "OK"]
    assert len(ok) > 30 and all(abs(t["v0"] - 10.0) < 0.01 for t in ok)
    assert any(t["now_ns"] > t_jump + 1_700_000_000 for t in ok)  # planning resumes


def test_odometry_frame_ids_alternating_never_give_a_plan(tmp_path):
    summary = write_bag(tmp_path / "bag", "straight_constant", duration_s=5.0,
                        faults=make_bag.BagFaults(odometry_frame_ids=("map", "odom")))
    res = _run(tmp_path / "bag", parameters(summary, rate_hz=5.0))
    assert res["tick_status_counts"].get("OK", 0) == 0
    late = [t for t in res["ticks"] if t["now_ns"] >= START_NS + 2_000_000_000]
    assert late and {t["reason_code"] for t in late} == {"ODOMETRY_FRAME_CHANGE"}


def test_planning_resumes_once_the_history_is_whole_after_an_odometry_frame_change(tmp_path):
    """Odometry in another frame for 1 s (4.0 .. 5.0 s), then back: the ticks whose
    history window reaches before a restart of the frames in use skip with
    ODOMETRY_FRAME_CHANGE, and planning resumes at the first tick whose window starts at
    the first sample after the switch back (within max_extrapolation)."""
    summary = write_bag(tmp_path / "bag", "straight_constant", duration_s=9.0,
                        faults=make_bag.BagFaults(odometry_frame_window=(4.0, 5.0, "map")))
    values = parameters(summary, rate_hz=2.0)
    res = _run(tmp_path / "bag", values)
    ticks = res["ticks"]
    extrapolation_ns = int(values["core.max_extrapolation"] * 1e9)
    switch_ns, back_ns = START_NS + 4_000_000_000, START_NS + 5_000_000_000
    after = [t for t in ticks if t["now_ns"] >= switch_ns]
    ok = [t for t in after if t["status"] == "OK"]
    assert ok, [(t["now_ns"], t["reason"]) for t in after]
    first = ok[0]
    assert first["t0_ns"] - 1_500_000_000 >= back_ns - extrapolation_ns
    lost = [t for t in after if t["now_ns"] < first["now_ns"]]
    assert lost and {t["reason_code"] for t in lost} == {"ODOMETRY_FRAME_CHANGE"}
    # The tick before the first OK one could not have had a whole history: its t0 (a
    # period earlier) is less than 1.5 s after the switch back.
    assert first["t0_ns"] - 500_000_000 - 1_500_000_000 < back_ns - extrapolation_ns
    assert all(t["status"] == "OK" for t in after if t["now_ns"] >= first["now_ns"])


def test_a_single_late_message_does_not_start_an_epoch(tmp_path):
    """One camera message stamped 3 s in the past (log time in order) is rejected for its
    stream; the bag stays one epoch and planning goes on."""
    summary = write_bag(tmp_path / "bag", duration_s=8.0)
    values = parameters(summary, rate_hz=2.0)
    clean = _run(tmp_path / "bag", values)
    damaged = tmp_path / "late"
    topic = make_bag.camera_topic(1, "rgb8")
    with bag_io.BagReader(tmp_path / "bag") as reader, \
            bag_io.BagWriter(damaged, "mcap") as writer:
        for k, bm in enumerate(reader.messages()):
            if bm.topic == topic and bm.stamp_ns == START_NS + 5_000_000_000:
                late = bag_io.msg_class(bm.msgtype)(**{**bm.msg.__dict__,
                                                      "header": bag_io.header(
                                                          bm.stamp_ns - 3_000_000_000,
                                                          bm.msg.header.frame_id)})
                writer.write(bm.topic, bm.msgtype, bm.log_time_ns, late)
                continue
            writer.write(bm.topic, bm.msgtype, bm.log_time_ns, bm.msg)
    res = _run(damaged, values)
    assert len(res["epochs"]) == 1
    assert sum(n for reason, n in res["rejections"].items() if "out of order" in reason) == 1
    assert res["tick_status_counts"]["OK"] >= clean["tick_status_counts"]["OK"] - 1
