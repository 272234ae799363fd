"""Message conversion (alpamayo_ros/ros/convert.py, markers.py) without a ROS graph."""
import io

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

pytest.importorskip("rclpy")
from nav_msgs.msg import Odometry  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from alpamayo_ros.core.config import PlannerConfig  # noqa: E402
from alpamayo_ros.core.errors import DecodeError  # noqa: E402
from alpamayo_ros.core.image_decode import decode_image  # noqa: E402
from alpamayo_ros.core.kinematic_model import ConstantVelocityModel  # noqa: E402
from alpamayo_ros.core.odometry import OdometrySample  # noqa: E402
from alpamayo_ros.core.plan_message import OutputContext  # noqa: E402
from alpamayo_ros.core.plan_result import PlanStatus  # noqa: E402
from alpamayo_ros.core.planner_core import PlannerCore  # noqa: E402
from alpamayo_ros.core.types import InferenceOptions, InferencePath, ModelDescription  # noqa: E402,E501
from alpamayo_ros.msg import PlannerOutput  # noqa: E402
from alpamayo_ros.ros import convert  # noqa: E402
from alpamayo_ros.ros.markers import plan_to_markers  # noqa: E402
from alpamayo_ros.testbed.scenario_publisher import encode_jpeg, rgb_to_image  # noqa: E402
from alpamayo_ros.bag import bag_io  # noqa: E402
from alpamayo_ros.sim import scenario as sc  # noqa: E402

S = 1_000_000_000


def _pose_matrix(msg):
    p, q = msg.position, msg.orientation
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
    T[:3, 3] = [p.x, p.y, p.z]
    return T


def test_time_round_trip_is_exact_int_ns():
    for ns in (0, 1, 999_999_999, 1_700_000_000_123_456_789):
        assert convert.time_to_ns(convert.ns_to_time(ns)) == ns
    t = convert.ns_to_time(1_500_000_000)
    assert (t.sec, t.nanosec) == (1, 500_000_000)


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "bgra8"])
def test_raw_image_is_a_zero_copy_view_that_decodes_to_rgb(encoding):
    rgb = np.random.default_rng(0).integers(0, 255, (6, 10, 3), dtype=np.uint8)
    msg = rgb_to_image(rgb, encoding)
    encoded = convert.image_to_encoded(msg)
    assert isinstance(encoded.data, np.ndarray) and not encoded.data.flags.owndata
    assert np.shares_memory(encoded.data, np.frombuffer(msg.data, np.uint8))
    np.testing.assert_array_equal(decode_image(encoded), rgb)


def test_raw_image_with_row_padding_decodes():
    rgb = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    padded = np.zeros((4, 16), np.uint8)
    padded[:, :15] = rgb.reshape(4, 15)
    msg = Image(height=4, width=5, encoding="rgb8", step=16, data=padded.tobytes())
    np.testing.assert_array_equal(decode_image(convert.image_to_encoded(msg)), rgb)


def test_bad_raw_images_are_rejected_with_numbers():
    with pytest.raises(DecodeError, match="unsupported image encoding '16UC1'"):
        convert.image_to_encoded(Image(height=2, width=2, encoding="16UC1", step=4,
                                       data=bytes(8)))
    with pytest.raises(DecodeError, match="have 11 data bytes, need 12"):
        convert.image_to_encoded(Image(height=2, width=2, encoding="rgb8", step=6,
                                       data=bytes(11)))


def test_compressed_images():
    rgb = np.full((16, 24, 3), 120, np.uint8)
    jpeg = encode_jpeg(rgb, 95)
    for fmt in ("jpeg", "rgb8; jpeg compressed bgr8", ""):
        encoded = convert.compressed_to_encoded(CompressedImage(format=fmt, data=jpeg))
        assert encoded.encoding == "jpeg"
        assert decode_image(encoded).shape == (16, 24, 3)
    with pytest.raises(DecodeError, match="does not start with the png signature"):
        convert.compressed_to_encoded(CompressedImage(format="png", data=jpeg))
    with pytest.raises(DecodeError, match="no data"):
        convert.compressed_to_encoded(CompressedImage(format="jpeg", data=b""))
    with pytest.raises(DecodeError, match="unsupported CompressedImage format 'h264'"):
        convert.compressed_to_encoded(CompressedImage(format="h264", data=jpeg))
    # A truncated JPEG passes the cheap check and fails when decoded.
    truncated = convert.compressed_to_encoded(CompressedImage(format="jpeg", data=jpeg[:40]))
    with pytest.raises(DecodeError, match="corrupt jpeg"):
        decode_image(truncated)


def test_bag_replay_accepts_and_refuses_compressed_frames_as_the_node_does():
    from PIL import Image as PILImage

    from alpamayo_ros.bag import bag_io

    rgb = np.full((16, 24, 3), 120, np.uint8)
    buf = io.BytesIO()
    PILImage.fromarray(rgb).save(buf, format="PNG")
    jpeg, png = encode_jpeg(rgb, 95), buf.getvalue()

    def bag_msg(fmt, data):
        return bag_io.msg_class(bag_io.COMPRESSED_IMAGE_TYPE)(
            header=bag_io.header(0, "cam"), format=fmt, data=np.frombuffer(data, np.uint8))

    for fmt, data, codec in (("", jpeg, "jpeg"), ("", png, "png"), ("png", png, "png"),
                             ("bgr8; jpeg compressed bgr8", jpeg, "jpeg")):
        node = convert.compressed_to_encoded(CompressedImage(format=fmt, data=data))
        bag = bag_io.image_to_encoded(bag_msg(fmt, data), bag_io.COMPRESSED_IMAGE_TYPE)
        assert node.encoding == bag.encoding == codec, (fmt, codec)
    for fmt, data, pattern in (("png", jpeg, "does not start with the png signature"),
                               ("", b"\x00\x01\x02\x03", "unsupported CompressedImage format"),
                               ("h264", jpeg, "unsupported CompressedImage format 'h264'")):
        with pytest.raises(DecodeError, match=pattern):
            convert.compressed_to_encoded(CompressedImage(format=fmt, data=data))
        with pytest.raises(DecodeError, match=pattern):
            bag_io.image_to_encoded(bag_msg(fmt, data), bag_io.COMPRESSED_IMAGE_TYPE)


def test_odometry_sample():
    msg = Odometry()
    msg.header.stamp = convert.ns_to_time(5 * S + 7)
    msg.header.frame_id = "map"
    msg.pose.pose.position.x, msg.pose.pose.position.y = 1.5, -2.0
    msg.pose.pose.orientation.z, msg.pose.pose.orientation.w = np.sin(0.2), np.cos(0.2)
    sample = convert.odometry_to_sample(msg)
    assert sample.stamp_ns == 5 * S + 7 and sample.frame_id == "map"
    np.testing.assert_allclose(sample.xyz, [1.5, -2.0, 0.0])
    np.testing.assert_allclose(sample.quat_xyzw, [0, 0, np.sin(0.2), np.cos(0.2)])


@pytest.fixture(scope="module")
def plan():
    """An OK PlanResult of the core on a curved 8 m/s drive (constant-velocity model)."""
    scen = sc.circle_8mps(duration_s=4.0, cameras=sc.default_cameras(width=32, height=32))
    core = PlannerCore(PlannerConfig(), ConstantVelocityModel(), InferenceOptions(num_samples=2))
    for index_slot, spec in enumerate(scen.cameras):
        for t in scen.camera_stamps(spec.index, 0.0, 3.0):
            msg = rgb_to_image(np.zeros((32, 32, 3), np.uint8), "rgb8")
            core.add_image(index_slot, int(scen.stamp_ns(t)), convert.image_to_encoded(msg))
    odo = scen.odometry_samples(0.0, 3.0)
    for stamp, xyz, quat in zip(odo.stamp_ns, odo.xyz, odo.quat_xyzw):
        core.add_odometry(OdometrySample.from_pose(int(stamp), xyz, quat, "map", "base_link"))
    result = core.tick(int(scen.stamp_ns(3.0)))
    assert result.status == PlanStatus.OK, result.reason
    return result


def _context():
    return OutputContext("base_link", ("/a", "/b", "/c", "/d"), (0, 1, 2, 6), ModelDescription(
        checkpoint="/ckpt (abc)", model_id="abc", device="cpu", dtype="float32",
        options=InferenceOptions(num_samples=2),
        path=InferencePath("eager", "fast path switched off at warm-up: why")))


def test_plan_message_is_complete_and_stamped_with_t0(plan):
    msg = convert.plan_to_msg(plan, _context(), latency_s=0.25, latency_wall_s=0.125)
    assert isinstance(msg, PlannerOutput)
    assert convert.time_to_ns(msg.header.stamp) == plan.t0_ns
    assert convert.time_to_ns(msg.tick_stamp) == plan.now_ns
    assert msg.reason_code == PlannerOutput.REASON_NONE
    # The odometry frame is the one of the odometry the plan was built from.
    assert msg.header.frame_id == "base_link" and msg.odom_frame_id == "map"
    assert msg.status == PlannerOutput.STATUS_OK and len(msg.candidates) == 2
    cand = msg.candidates[0]
    assert len(cand.poses) == len(cand.time_from_t0) == len(cand.speed) == 64
    first, last = cand.time_from_t0[0], cand.time_from_t0[-1]
    assert (first.sec, first.nanosec) == (0, 100_000_000)
    assert (last.sec, last.nanosec) == (6, 400_000_000)
    assert cand.valid and cand.poses[0].position.x == pytest.approx(0.8, abs=1e-3)
    m = msg.inputs
    assert list(m.camera_indices) == [0, 1, 2, 6] and list(m.camera_topics)[3] == "/d"
    assert len(m.frame_stamps) == 16 and len(m.frame_skew) == 16
    assert convert.time_to_ns(m.frame_stamps[3]) == plan.frame_stamps_ns[3]
    assert len(m.history_poses) == 16 and m.history_poses[-1].position.x == 0.0
    assert convert.time_to_ns(m.history_end) == plan.t0_ns
    assert convert.time_to_ns(m.history_start) == plan.t0_ns - 1_500_000_000
    assert m.odometry_samples > 50
    assert msg.timing.latency == pytest.approx(0.25)
    assert msg.timing.latency_wall == pytest.approx(0.125)
    assert 0 < msg.timing.tick_to_model_start <= plan.timings.model_call + 1.0
    assert msg.timing.model_total == pytest.approx(plan.timings.model.total, rel=1e-5)
    assert (msg.model.checkpoint, msg.model.num_samples, msg.model.seed) == ("/ckpt (abc)", 2, 0)
    assert (msg.model.inference_path, msg.model.inference_problem) == (
        "eager", "fast path switched off at warm-up: why")
    assert msg.v0 == pytest.approx(8.0, rel=1e-3)


def test_node_and_replay_write_the_same_fields(plan):
    """PlannerOutput and both paths: what the replay writes and what the node publishes,
    each serialised and read back by rclpy, are equal field by field (one mapping,
    core.plan_message). (Raw bytes differ only in CDR padding, which rclpy leaves
    uninitialised; reading back also rounds float32 fields as the wire does.)"""
    from dataclasses import replace

    from rclpy.serialization import deserialize_message, serialize_message

    from alpamayo_ros.core.plan_message import path_data, planner_output_data
    from alpamayo_ros.core.plan_result import ReasonCode

    skipped = replace(plan, status=PlanStatus.SKIPPED, reason="odometry stale",
                      reason_code=ReasonCode.STALE_ODOMETRY, t0_ns=None, candidates=[],
                      v0=float("nan"), t0_pose_odom=None, history_xyz=None)
    def written_by_replay(data):
        raw = bag_io.typestore().serialize_cdr(bag_io.to_bag_message(data), data.type)
        return deserialize_message(bytes(raw), convert.message_class(data.type))

    outputs = [planner_output_data(r, _context(), latency_s=0.25) for r in (plan, skipped)]
    for data in outputs + list(path_data(plan, "base_link")):
        cls = convert.message_class(data.type)
        published = deserialize_message(serialize_message(convert.to_ros_message(data)), cls)
        assert written_by_replay(data) == published, data.type
    assert written_by_replay(outputs[0]).odom_frame_id == "map"
    msg = convert.plan_to_msg(skipped, _context(), latency_s=0.25)
    assert msg.reason_code == PlannerOutput.REASON_STALE_ODOMETRY
    assert msg.v0 == 0.0  # every published float is finite; the status says "no plan"


def test_every_output_row_is_written_alike_by_node_and_replay(plan):
    """Each row of core.outputs.OUTPUTS (markers included, whose newer fields the bag
    writer fills with defaults) gives the same message to the node and the replay bag;
    a skipped tick gives only the PlannerOutput."""
    from dataclasses import replace

    from rclpy.serialization import deserialize_message, serialize_message

    from alpamayo_ros.core.outputs import OUTPUTS, OutputTick

    tick = OutputTick(plan, _context(), latency_s=0.25, marker_text_height=0.8)
    for row in OUTPUTS:
        data = row.build(tick)
        assert data is not None and data.type == row.type, row.name
        cls = convert.message_class(row.type)
        raw = bag_io.typestore().serialize_cdr(bag_io.to_bag_message(data), row.type)
        published = deserialize_message(serialize_message(convert.to_ros_message(data)), cls)
        assert deserialize_message(bytes(raw), cls) == published, row.name
    skipped = OutputTick(replace(plan, status=PlanStatus.SKIPPED, candidates=[]), _context(),
                         latency_s=0.25)
    assert [row.name for row in OUTPUTS if row.build(skipped) is not None] == ["plan"]


def test_odometry_path_is_the_base_path_moved_by_the_t0_pose(plan):
    path, path_odom = convert.plan_to_paths(plan, "base_link")
    assert path.header.frame_id == "base_link" and path_odom.header.frame_id == "map"
    assert convert.time_to_ns(path.header.stamp) == plan.t0_ns
    assert convert.time_to_ns(path.poses[0].header.stamp) == plan.t0_ns + 100_000_000
    T0 = np.eye(4)
    T0[:3, :3], T0[:3, 3] = plan.t0_pose_odom.rotation, plan.t0_pose_odom.position
    for base, odom in zip(path.poses, path_odom.poses):
        np.testing.assert_allclose(T0 @ _pose_matrix(base.pose), _pose_matrix(odom.pose),
                                   atol=1e-9)


def test_paths_refuse_a_plan_that_is_not_ok(plan):
    from dataclasses import replace
    with pytest.raises(ValueError, match="need an OK plan, have status SKIPPED"):
        convert.plan_to_paths(replace(plan, status=PlanStatus.SKIPPED), "b")


def test_markers_are_fixed_in_the_odometry_frame(plan):
    """Markers lie where the plan lies on the ground (path_odom poses), not frame_locked:
    RViz must not carry them along with the car."""
    array = plan_to_markers(plan, "base_link")
    assert array.markers[0].action == Marker.DELETEALL
    lines = [m for m in array.markers if m.type == Marker.LINE_STRIP]
    assert len(lines) == 2
    assert all(not m.frame_locked and m.header.frame_id == "map" for m in array.markers)
    assert all(convert.time_to_ns(m.header.stamp) == plan.t0_ns for m in array.markers)
    assert lines[0].scale.x > lines[1].scale.x  # the selected sample stands out
    points = np.array([[p.x, p.y, p.z] for p in lines[0].points])
    np.testing.assert_allclose(points, plan.candidates[0].xyz_odom, atol=1e-9)
    from dataclasses import replace
    talking = replace(plan, candidates=[replace(c, coc="keep lane") for c in plan.candidates])
    text = [m for m in plan_to_markers(talking, "base_link").markers
            if m.type == Marker.TEXT_VIEW_FACING]
    assert text[0].text == "keep lane" and text[0].header.frame_id == "map"
    np.testing.assert_allclose([text[0].pose.position.x, text[0].pose.position.y],
                               plan.t0_pose_odom.position[:2])


@pytest.mark.parametrize("quat, accepted", [((0, 0, 0, 1), True), ((0, 0, 0, 1.01), True),
                                            ((0, 0, 0.6, 0.9), True), ((0, 0, 0, 1.2), False),
                                            ((0, 0, 0, 0), False), ((0, 0, np.nan, 1), False)])
def test_odometry_accepted_or_refused_alike_live_and_in_replay(quat, accepted):
    """The node (rclpy message -> PlannerCore.add_odometry) and the replay (rosbags message
    -> checked_odometry) apply one rule (core.odometry)."""
    from alpamayo_ros.core.errors import OdometryError
    from alpamayo_ros.core.odometry import checked_odometry
    from alpamayo_ros.core.ring_buffer import InsertStatus

    live = Odometry()
    live.header.stamp = convert.ns_to_time(S)
    live.pose.pose.orientation.x, live.pose.pose.orientation.y = float(quat[0]), float(quat[1])
    live.pose.pose.orientation.z, live.pose.pose.orientation.w = float(quat[2]), float(quat[3])
    core = PlannerCore(PlannerConfig(), ConstantVelocityModel())
    live_ok = core.add_odometry(convert.odometry_to_sample(live)).status == InsertStatus.ADDED
    recorded = bag_io.odometry_message(S, "map", "base_link", (0.0, 0.0, 0.0), quat,
                                       (0.0, 0.0, 0.0), (0.0, 0.0, 0.0))
    try:
        sample = checked_odometry(bag_io.odometry_to_sample(recorded))
        replay_ok = True
        assert abs(np.linalg.norm(sample.quat_xyzw) - 1.0) < 1e-12
    except OdometryError:
        replay_ok = False
    assert live_ok == replay_ok == accepted
