"""The generated alpamayo_ros messages cross process boundaries intact, and the harness
(processes with --ros-args, domain ids, waiting helpers) does what it promises."""
from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

import ros_harness

pytestmark = pytest.mark.ros

HERE = Path(__file__).resolve().parent
PUBLISHER = [sys.executable, str(HERE / "ros_test_publisher.py")]


def test_generated_messages_import_with_constants_and_nested_types():
    from alpamayo_ros.msg import InputManifest, ModelInfo, PlannerOutput, PlannerTiming, TrajectoryCandidate

    assert PlannerOutput.STATUS_OK == 0 and PlannerOutput.STATUS_MODEL_ERROR == 3
    msg = PlannerOutput()
    assert isinstance(msg.inputs, InputManifest)
    assert isinstance(msg.timing, PlannerTiming)
    assert isinstance(msg.model, ModelInfo)
    fields = PlannerOutput.get_fields_and_field_types()
    assert fields["candidates"] == "sequence<alpamayo_ros/TrajectoryCandidate>"
    assert fields["header"] == "std_msgs/Header"
    assert TrajectoryCandidate.get_fields_and_field_types()["poses"] == "sequence<geometry_msgs/Pose>"


def test_core_status_and_reason_enums_equal_the_message_constants():
    from alpamayo_ros.core.plan_result import PlanStatus, ReasonCode
    from alpamayo_ros.msg import PlannerOutput

    for prefix, enum_type in (("STATUS_", PlanStatus), ("REASON_", ReasonCode)):
        constants = {name[len(prefix):]: getattr(PlannerOutput, name)
                     for name in dir(PlannerOutput) if name.startswith(prefix)}
        assert constants == {member.name: member.value for member in enum_type}


def test_planner_output_round_trips_from_another_process(ros_process, ros_node):
    from alpamayo_ros.msg import PlannerOutput
    from ros_test_publisher import build_planner_output

    pub = ros_process(
        "ros_test_publisher", "planner_output", command=PUBLISHER,
        remaps={"output": "/roundtrip/plan"}, params={"seq_offset": 40, "rate_hz": 20.0},
    )
    received = ros_node.collect("/roundtrip/plan", PlannerOutput, 3, timeout=15.0)
    pub.assert_running()

    for msg in received:
        seq = msg.header.stamp.sec - 1_700_000_000
        assert seq >= 40, f"seq_offset parameter (-p) not applied: seq {seq}"
        expected = build_planner_output(seq)
        assert len(msg.candidates) == 3 and len(msg.candidates[0].poses) == 64
        assert msg.candidates[1].coc == expected.candidates[1].coc  # non-ASCII text survives
        assert msg.model.seed == expected.model.seed  # negative int64 beyond 32 bits
        assert msg == expected, ros_harness.message_differences(msg, expected)
    seqs = [m.header.stamp.sec for m in received]
    assert seqs == sorted(seqs) and len(set(seqs)) == 3


def test_planner_output_echoed_by_another_process_comes_back_equal(ros_process, ros_node, tmp_path):
    from alpamayo_ros.msg import PlannerOutput
    from ros_test_publisher import build_planner_output

    params_file = tmp_path / "echo.yaml"
    params_file.write_text("/**:\n  ros__parameters:\n    rate_hz: 5.0\n")
    echo = ros_process(
        "ros_test_publisher", "echo", command=PUBLISHER, params_file=params_file,
        remaps={"input": "/echo/in", "output": "/echo/out"}, node_name="echo_node",
    )
    sub, inbox = ros_node.subscribe("/echo/out", PlannerOutput, qos=10)
    pub = ros_node.node.create_publisher(PlannerOutput, "/echo/in", 10)
    ros_node.wait_for_publisher_match(pub, timeout=15.0)
    ros_node.wait_for_subscription_match(sub, timeout=15.0)
    echo.wait_for_output(r"^ready$|\nready\n", timeout=15.0)
    # The remapped node name is visible in the graph.
    ros_node.wait_for_node("echo_node", timeout=10.0)

    sent = [build_planner_output(seq) for seq in (7, 8)]
    for msg in sent:
        pub.publish(msg)
    got = inbox.wait_for(2, timeout=10.0)
    assert len(got) == 2, f"have {len(got)} echoed messages, need 2\n{echo.describe()}"
    for echoed, original in zip(got, sent):
        assert echoed == original, ros_harness.message_differences(echoed, original)


def test_raw_1080p_images_at_30hz_arrive_with_the_large_message_profile(ros_process, ros_node):
    """Raw 6.2 MB rgb8 frames, best effort: with Fast DDS defaults none arrived (see
    config/fastdds_large_messages.xml). Rates are measured in bench/, here only arrival."""
    from rclpy.qos import qos_profile_sensor_data
    from sensor_msgs.msg import Image

    assert ros_process.env["FASTDDS_DEFAULT_PROFILES_FILE"].endswith("fastdds_large_messages.xml")
    ros_process(
        "ros_test_publisher", "image", command=PUBLISHER,
        remaps={"image": "/camera/raw"}, params={"rate_hz": 30.0, "width": 1920, "height": 1080},
    )
    frames = ros_node.collect("/camera/raw", Image, 10, timeout=20.0, qos=qos_profile_sensor_data)
    for f in frames:
        assert (f.width, f.height, f.encoding, f.step) == (1920, 1080, "rgb8", 5760)
        assert len(f.data) == 1920 * 1080 * 3
        parity = int(f.header.frame_id.split("_")[1]) % 2
        assert f.data[0] == (40, 200)[parity] and f.data[-1] == (40, 200)[parity]
    indices = [int(f.header.frame_id.split("_")[1]) for f in frames]
    assert indices == sorted(indices)


def test_running_node_stops_cleanly_on_sigint_and_its_output_is_kept(ros_process, ros_node):
    proc = ros_process(
        "ros_test_publisher", "planner_output", command=PUBLISHER, remaps={"output": "/nobody"},
    )
    ros_node.wait_for_publisher("/nobody", timeout=15.0)  # the node is up and spinning
    assert proc.stop(sigint_timeout=10.0) == 0, proc.describe()
    assert not proc.is_running()
    assert proc.log_path.is_file()


def test_process_that_ignores_sigint_is_killed(ros_process):
    ignore_sigint = "import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    proc = ros_process("sigint_ignorer", command=[sys.executable, "-c", ignore_sigint])
    proc.wait_for_output(r"up", timeout=10.0)
    t = time.monotonic()
    assert proc.stop(sigint_timeout=0.5) == -9
    assert time.monotonic() - t < 5.0
    assert proc.output() == "up\n"


def test_unknown_mode_exit_code_and_message_are_captured(ros_process):
    proc = ros_process("ros_test_publisher", "bogus", command=PUBLISHER)
    assert proc.wait_exit(timeout=15.0) == 2
    assert "unknown mode 'bogus'" in proc.output()
    with pytest.raises(AssertionError, match="process died"):
        proc.assert_running()


def test_collect_timeout_names_have_and_need(ros_node):
    from std_msgs.msg import String

    ros_node.node.create_publisher(String, "/silent", 10)
    with pytest.raises(AssertionError, match=r"/silent: have 0 String messages after 0.3 s, need 2"):
        ros_node.collect("/silent", String, 2, timeout=0.3)


def test_domain_leases_are_distinct_and_released(ros_domain_id):
    with ros_harness.DomainIdLease(start=ros_domain_id) as a, ros_harness.DomainIdLease(start=ros_domain_id) as b:
        assert len({ros_domain_id, a.domain_id, b.domain_id}) == 3
        assert all(1 <= d <= 101 for d in (a.domain_id, b.domain_id))
        taken = a.domain_id
    with ros_harness.DomainIdLease(start=taken - 1) as c:  # released ids are free again
        assert c.domain_id == taken


def test_ros_args_command_line():
    args = ros_harness.ros_args(
        "p.yaml", {"image": "/cam"}, {"rate": 2.5, "name": "1", "on": True, "ids": [0, 6]}, node_name="n"
    )
    assert args == [
        "--ros-args", "--params-file", "p.yaml", "-r", "__node:=n", "-r", "image:=/cam",
        "-p", "rate:=2.5", "-p", "name:='1'", "-p", "on:=true", "-p", "ids:=[0,6]",
    ]


def test_process_environment_matches_the_tests(ros_env, ros_domain_id):
    assert ros_env["ROS_DOMAIN_ID"] == str(ros_domain_id)
    assert ros_env["PYTHONPATH"].split(":")[0] == str(ros_harness.REPO_ROOT)
    assert ros_env["ROS_AUTOMATIC_DISCOVERY_RANGE"] == "LOCALHOST"
    assert Path(ros_env["ROS_LOG_DIR"]).is_dir()
    assert Path(ros_env["FASTDDS_DEFAULT_PROFILES_FILE"]).is_file()
