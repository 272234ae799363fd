"""Live mode: the bag_player node plays a bag with /clock, and records the planner's outputs."""
import time

import numpy as np
import pytest

from alpamayo_ros.core.plan_message import PLANNER_OUTPUT_TYPE
from alpamayo_ros.bag import bag_io
from alpamayo_ros.tools import make_bag
from scenario_bags import write_bag

pytestmark = pytest.mark.ros

START_NS = 1_700_000_000_000_000_000


def _reliable(depth=1000):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    return QoSProfile(depth=depth, reliability=ReliabilityPolicy.RELIABLE)


def test_player_publishes_clock_and_selected_topics(tmp_path, ros_node, ros_process):
    from nav_msgs.msg import Odometry
    from rosgraph_msgs.msg import Clock
    from sensor_msgs.msg import Image
    summary = write_bag(tmp_path / "bag", duration_s=4.0)
    _, clock_inbox = ros_node.subscribe("/clock", Clock, qos=_reliable())
    _, odo_inbox = ros_node.subscribe(make_bag.DEFAULT_ODOMETRY_TOPIC, Odometry, qos=_reliable())
    _, cam_inbox = ros_node.subscribe(summary.camera_topics[1], Image, qos=_reliable())
    _, other_inbox = ros_node.subscribe(summary.camera_topics[2], Image, qos=_reliable())
    player = ros_process("bag_player", params={
        "bag": str(tmp_path / "bag"), "rate": 2.0, "wait_for_subscribers": 1, "linger": 0.2,
        "topics": [make_bag.DEFAULT_ODOMETRY_TOPIC, summary.camera_topics[1]]})
    odo_inbox.wait_for(201, timeout=20.0)
    assert player.wait_exit(timeout=15.0) == 0, player.describe()
    odo = list(odo_inbox.messages)
    stamps = np.array([bag_io.stamp_to_ns(m.header.stamp) for m in odo])
    assert len(odo) >= 190, f"only {len(odo)} of 201 odometry messages arrived"
    assert np.all(np.diff(stamps) > 0)
    assert stamps[0] >= START_NS and stamps[-1] <= START_NS + 4_000_000_000
    clock = np.array([bag_io.stamp_to_ns(c.clock) for c in clock_inbox.messages])
    assert len(clock) > 50
    assert np.all(np.diff(clock) >= 0), "/clock went backwards without loop"
    assert clock[0] >= START_NS and clock[-1] == START_NS + 4_000_000_000
    assert len(cam_inbox.messages) >= 38
    assert cam_inbox.messages[0].height == 48
    assert not other_inbox.messages  # not in `topics`: not played


def test_player_paces_by_rate_and_loops(tmp_path, ros_node, ros_process):
    from rosgraph_msgs.msg import Clock
    write_bag(tmp_path / "bag", duration_s=1.0)
    _, clock_inbox = ros_node.subscribe("/clock", Clock, qos=_reliable(5000))
    start = time.monotonic()
    player = ros_process("bag_player", params={
        "bag": str(tmp_path / "bag"), "rate": 0.5, "loop": True, "start_delay": 1.0,
        "clock_hz": 50.0})
    # Wait for the clock to jump back to the start: the loop has restarted.
    ros_node.wait_until(
        lambda: any(np.diff([bag_io.stamp_to_ns(c.clock) for c in clock_inbox.messages]) < 0),
        timeout=20.0, what="/clock jumping back at the loop")
    elapsed = time.monotonic() - start
    player.stop()
    # 1 s of bag at rate 0.5 takes 2 s of wall time (plus start delay and process start).
    assert elapsed > 1.0 + 2.0 - 0.3
    clock = np.array([bag_io.stamp_to_ns(c.clock) for c in clock_inbox.messages])
    back = int(np.argmax(np.diff(clock) < 0)) + 1
    assert clock[back - 1] == START_NS + 1_000_000_000 and clock[back] == START_NS


def test_live_planner_on_played_bag_is_recorded(tmp_path, ros_process):
    """bag_player (/clock + sensors) -> planner_node (use_sim_time) -> recorder bag."""
    summary = write_bag(tmp_path / "bag", duration_s=6.0)
    params = tmp_path / "planner.yaml"
    make_bag.write_parameter_file(params, make_bag.planner_parameters_for(
        summary, backend="constant_velocity", rate_hz=2.0,
        extra={"markers.enabled": False}))
    planner = ros_process("planner_node", params_file=params, params={"use_sim_time": True})
    planner.wait_for_output("planning at", timeout=30.0)
    record = tmp_path / "recorded"
    player = ros_process("bag_player", params={
        "bag": str(tmp_path / "bag"), "rate": 1.0, "wait_for_subscribers": 1, "linger": 1.5,
        "record_path": str(record), "record_topics": ["/alpamayo/plan", "/alpamayo/path"]})
    assert player.wait_exit(timeout=40.0) == 0, player.describe() + planner.describe()
    with bag_io.BagReader(record) as reader:
        assert reader.topics["/alpamayo/plan"] == PLANNER_OUTPUT_TYPE
        plans = list(reader.messages(["/alpamayo/plan"]))
        paths = list(reader.messages(["/alpamayo/path"]))
    ok = [p for p in plans if p.msg.status == 0]
    assert ok, [p.msg.status_reason for p in plans]
    assert paths and len(paths[0].msg.poses) == 64
    for p in ok:
        t0 = bag_io.stamp_to_ns(p.msg.header.stamp)
        # Stamped with t0 of the bag's time line; recorded at bag (sim) time after t0.
        assert START_NS <= t0 <= START_NS + 6_000_000_000
        assert p.log_time_ns >= t0
        assert abs(p.msg.v0 - 10.0) < 0.05


def _carla_style_bag(path):
    """A bag with its own /clock, off the header stamps by float rounding (300 ns)."""
    return write_bag(path, duration_s=3.0, layout=make_bag.BagLayout(clock_hz=20.0,
                                                                     clock_rounding_ns=300))


def test_a_recorded_clock_is_not_played_next_to_the_players_own(tmp_path, ros_node,
                                                                  ros_process):
    from nav_msgs.msg import Odometry
    from rosgraph_msgs.msg import Clock
    _carla_style_bag(tmp_path / "bag")
    _, clock_inbox = ros_node.subscribe("/clock", Clock, qos=_reliable(5000))
    ros_node.subscribe(make_bag.DEFAULT_ODOMETRY_TOPIC, Odometry, qos=_reliable())
    player = ros_process("bag_player", params={
        "bag": str(tmp_path / "bag"), "rate": 2.0, "linger": 0.2, "clock_hz": 50.0,
        "wait_for_subscribers": 1, "topics": [make_bag.DEFAULT_ODOMETRY_TOPIC, "/clock"]})
    assert player.wait_exit(timeout=20.0) == 0, player.describe()
    clock = np.array([bag_io.stamp_to_ns(c.clock) for c in clock_inbox.messages])
    assert len(clock) > 30
    assert np.all(np.diff(clock) >= 0), "two clocks interleaved: /clock went back"
    assert player.output().count("has a recorded /clock: not played") == 1


def test_use_bag_clock_plays_the_recorded_clock_only(tmp_path, ros_node, ros_process):
    from rosgraph_msgs.msg import Clock
    _carla_style_bag(tmp_path / "bag")
    _, clock_inbox = ros_node.subscribe("/clock", Clock, qos=_reliable(5000))
    player = ros_process("bag_player", params={
        "bag": str(tmp_path / "bag"), "rate": 2.0, "linger": 0.2, "use_bag_clock": True,
        "wait_for_subscribers": 1, "topics": ["/clock"]})
    assert player.wait_exit(timeout=20.0) == 0, player.describe()
    clock = [bag_io.stamp_to_ns(c.clock) for c in clock_inbox.messages]
    with bag_io.BagReader(tmp_path / "bag") as reader:
        recorded = [bag_io.stamp_to_ns(m.msg.clock) for m in reader.messages(["/clock"])]
    assert clock == recorded  # exactly the recorded values, nothing generated in between


@pytest.mark.parametrize("names", [("SIGINT",), ("SIGINT", "SIGTERM", "SIGINT")],
                         ids=["sigint", "3xmixed"])
def test_signals_stop_the_player_cleanly(tmp_path, ros_node, ros_process, names):
    """Ctrl-C once or more while playing: status 0, no KeyboardInterrupt traceback (the
    wait loop of main used to raise one), the recorder closed."""
    import signal

    from nav_msgs.msg import Odometry
    write_bag(tmp_path / "bag", duration_s=30.0)
    _, odo_inbox = ros_node.subscribe(make_bag.DEFAULT_ODOMETRY_TOPIC, Odometry, qos=_reliable())
    player = ros_process("bag_player", params={
        "bag": str(tmp_path / "bag"), "wait_for_subscribers": 1,
        "topics": [make_bag.DEFAULT_ODOMETRY_TOPIC], "record_path": str(tmp_path / "rec")})
    assert len(odo_inbox.wait_for(20, timeout=20.0)) >= 20  # playing
    for name in names:
        if player.is_running():
            player.popen.send_signal(getattr(signal, name))
    assert player.wait_exit(timeout=5.0) == 0, player.describe()
    out = player.output()
    assert "Traceback" not in out and "KeyboardInterrupt" not in out
    assert "recorded nothing" in out


def _missing_data_file(bag):
    next(bag.glob("*.mcap")).unlink()


def _zero_byte_data_file(bag):
    next(bag.glob("*.mcap")).write_bytes(b"")


def _bad_metadata(bag):
    (bag / "metadata.yaml").write_text("rosbag2_bagfile_information: [not, a, mapping\n")


@pytest.mark.parametrize("damage", [_missing_data_file, _zero_byte_data_file, _bad_metadata],
                         ids=["missing data file", "zero-byte mcap", "bad metadata"])
def test_a_failed_playback_exits_non_zero_with_the_reason(tmp_path, ros_process, damage):
    write_bag(tmp_path / "bag", duration_s=1.0)
    damage(tmp_path / "bag")
    player = ros_process("bag_player", params={"bag": str(tmp_path / "bag"), "linger": 0.0})
    assert player.wait_exit(timeout=30.0) == 2, player.describe()
    output = player.output()
    assert "playback failed: " in output and "Traceback" not in output
