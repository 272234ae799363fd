"""Scenario bag generator: contents, encodings, storages, metadata version, faults, CLI."""
import numpy as np
import pytest
import yaml

from alpamayo_ros.core.image_decode import decode_image
from alpamayo_ros.core import parameter_file
from alpamayo_ros.bag import bag_io
from alpamayo_ros.tools import make_bag, replay
from alpamayo_ros.sim.scenario import default_cameras, make_preset
from scenario_bags import HEIGHT, WIDTH, write_bag


@pytest.mark.parametrize("storage", ["mcap", "sqlite3"])
def test_bag_contents_rates_and_metadata_version(tmp_path, storage):
    summary = write_bag(tmp_path / "bag", duration_s=2.0, storage=storage, camera_rate=10.0)
    meta = yaml.safe_load((tmp_path / "bag" / "metadata.yaml").read_text())
    info = meta["rosbag2_bagfile_information"]
    assert info["version"] == 8
    assert info["storage_identifier"] == storage
    with bag_io.BagReader(tmp_path / "bag") as reader:
        assert reader.topics[make_bag.DEFAULT_ODOMETRY_TOPIC] == bag_io.ODOMETRY_TYPE
        counts = reader.message_counts
        odo = list(reader.messages([make_bag.DEFAULT_ODOMETRY_TOPIC]))
        cam = list(reader.messages([summary.camera_topics[6]]))
    assert counts[make_bag.DEFAULT_ODOMETRY_TOPIC] == 101          # 50 Hz, 0..2 s inclusive
    assert all(counts[summary.camera_topics[i]] == 21 for i in (0, 1, 2, 6))
    stamps = np.array([m.stamp_ns for m in odo])
    np.testing.assert_array_equal(np.diff(stamps), 20_000_000)
    assert odo[0].msg.header.frame_id == "odom" and odo[0].msg.child_frame_id == "base_link"
    # Straight at 10 m/s: x = 10 t, twist in the base frame.
    x = np.array([m.msg.pose.pose.position.x for m in odo])
    np.testing.assert_allclose(x, 10.0 * (stamps - stamps[0]) / 1e9, atol=1e-9)
    assert odo[5].msg.twist.twist.linear.x == pytest.approx(10.0)
    # Log time equals the header stamp for an ideal recorder.
    assert all(m.log_time_ns == m.stamp_ns for m in odo + cam)
    assert cam[0].msg.header.frame_id == "camera_front_tele_30fov"


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "bgra8", "jpeg"])
def test_image_encodings_decode_to_the_rendered_frame(tmp_path, encoding):
    summary = write_bag(tmp_path / "bag", duration_s=0.5, encoding=encoding)
    scenario = make_preset("straight_constant", duration_s=0.5,
                           cameras=default_cameras(10.0, WIDTH, HEIGHT, encoding))
    topic = summary.camera_topics[1]
    assert topic.endswith("/compressed") == (encoding == "jpeg")
    with bag_io.BagReader(tmp_path / "bag") as reader:
        msgs = list(reader.messages([topic]))
    expected_type = bag_io.COMPRESSED_IMAGE_TYPE if encoding == "jpeg" else bag_io.IMAGE_TYPE
    assert msgs[2].msgtype == expected_type
    rgb = decode_image(bag_io.image_to_encoded(msgs[2].msg, msgs[2].msgtype))
    truth = scenario.render_camera(1, 0.2)
    assert rgb.shape == (HEIGHT, WIDTH, 3)
    if encoding == "jpeg":
        assert np.mean(np.abs(rgb.astype(int) - truth)) < 6.0
    else:
        np.testing.assert_array_equal(rgb, truth)


def test_faults_drop_gap_and_time_jump(tmp_path):
    cam0 = make_bag.camera_topic(0, "rgb8")
    faults = make_bag.BagFaults(drop_topics=(cam0,),
                                gaps=((make_bag.DEFAULT_ODOMETRY_TOPIC, 1.0, 1.5),),
                                time_jump=(2.0, -10.0))
    summary = write_bag(tmp_path / "bag", duration_s=3.0, faults=faults)
    assert cam0 not in summary.message_counts
    with bag_io.BagReader(tmp_path / "bag") as reader:
        odo = list(reader.messages([make_bag.DEFAULT_ODOMETRY_TOPIC]))
    t = (np.array([m.stamp_ns for m in odo]) - 1_700_000_000_000_000_000) / 1e9
    assert not np.any((t >= 1.0 - 1e-9) & (t < 1.5 - 1e-9))
    assert summary.message_counts[make_bag.DEFAULT_ODOMETRY_TOPIC] == 151 - 25
    # After the jump the stamps restart 10 s earlier, in the bag's write order.
    jump = int(np.argmax(np.diff(t) < 0)) + 1
    assert t[jump - 1] == pytest.approx(1.98) and t[jump] == pytest.approx(-8.0)


def test_cli_writes_bag_and_matching_parameter_file(tmp_path, capsys):
    params = tmp_path / "params.yaml"
    code = make_bag.main([str(tmp_path / "bag"), "--preset", "circle_8mps", "--duration", "1",
                          "--width", "32", "--height", "32", "--encoding", "jpeg",
                          "--storage", "sqlite3", "--write-params", str(params)])
    assert code == 0
    assert "wrote" in capsys.readouterr().out
    values = replay.resolve_parameters(parameter_file.read_parameter_file(params, "alpamayo_planner"))
    assert values["camera_transports"] == ["compressed"] * 4
    assert values["model.backend"] == "constant_velocity"
    with bag_io.BagReader(tmp_path / "bag") as reader:
        assert set(reader.topics) == set(values["camera_topics"]) | {values["odometry_topic"]}
    # An existing output is refused with exit code 2, not overwritten.
    assert make_bag.main([str(tmp_path / "bag"), "--duration", "1"]) == 2
