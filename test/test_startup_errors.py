"""Start-up errors are one line and exit status 2, never a traceback (issue 9, item 8):
damaged checkpoints through real planner_node processes and through the replay CLI, and
invalid topic names through real processes."""
from __future__ import annotations

import json
import shutil

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("torch")
from safetensors.torch import load_file, save_file  # noqa: E402

from alpamayo_ros.tools import make_bag, replay  # noqa: E402
from scenario_bags import write_bag  # noqa: E402

pytestmark = pytest.mark.ros


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    from alpamayo_ros.model.tiny_checkpoint import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("tiny")
    write_tiny_checkpoint(root, seed=0)
    return root


def _truncate(checkpoint):
    path = checkpoint / "model.safetensors"
    path.write_bytes(path.read_bytes()[:-4096])
    return path


def _garbage(checkpoint):
    path = checkpoint / "model.safetensors"
    path.write_bytes(bytes(range(256)) * 64)
    return path


def _config_not_json(checkpoint):
    path = checkpoint / "config.json"
    path.write_text('{"model_type": "alpamayo_r1",')
    return path


def _missing_shard(checkpoint):
    state = load_file(str(checkpoint / "model.safetensors"))
    names = sorted(state)
    save_file({k: state[k] for k in names[::2]}, str(checkpoint / "model-00001-of-00002.safetensors"))
    (checkpoint / "model.safetensors").unlink()
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        k: f"model-0000{1 + i % 2}-of-00002.safetensors" for i, k in enumerate(names)}}))
    return checkpoint / "model-00002-of-00002.safetensors"


DAMAGES = {"truncated": (_truncate, "is truncated: have"),
           "garbage": (_garbage, "is not a safetensors file"),
           "config_not_json": (_config_not_json, "is not valid JSON"),
           "missing_shard": (_missing_shard, "shards named in model.safetensors.index.json are "
                                             "missing")}


def _damaged_copy(tiny_root, tmp_path, damage):
    root = tmp_path / "set"
    shutil.copytree(tiny_root, root)
    make, needle = DAMAGES[damage]
    named = make(root / "checkpoint")
    return root / "checkpoint", named, needle


def _one_error_line(out: str, prefix: str) -> str:
    """The output's only line starting with `prefix`; no traceback anywhere."""
    assert "Traceback" not in out, out
    lines = [line for line in out.splitlines() if line.startswith(prefix)]
    assert len(lines) == 1, out
    return lines[0]


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_a_damaged_checkpoint_stops_the_node_with_one_line(ros_process, tiny_root, tmp_path,
                                                           damage):
    checkpoint, named, needle = _damaged_copy(tiny_root, tmp_path, damage)
    proc = ros_process("planner_node", params={"model.checkpoint_dir": str(checkpoint),
                                               "model.device": "cpu"})
    assert proc.wait_exit(timeout=90.0) == 2
    line = _one_error_line(proc.output(), "alpamayo_planner: configuration error: ")
    assert needle in line
    if damage == "missing_shard":
        assert named.name in line
    else:
        assert str(named) in line


@pytest.mark.parametrize("params, line", [
    ({"camera_topics": ["cam0", "bad topic!", "cam2", "cam3"]},
     "camera_topics[1]: have 'bad topic!', need a valid ROS topic name (topic name must not "
     "contain characters other than alphanumerics, '_', '~', '{', or '}')"),
    ({"odometry_topic": "1abc"},
     "odometry_topic: have '1abc', need a valid ROS topic name (topic name token must not "
     "start with a number)"),
], ids=["camera_topics", "odometry_topic"])
def test_an_invalid_topic_name_stops_the_node_with_one_line(ros_process, params, line):
    proc = ros_process("planner_node", params={"model.backend": "constant_velocity", **params})
    assert proc.wait_exit(timeout=30.0) == 2
    assert _one_error_line(proc.output(), "alpamayo_planner: configuration error: ") == \
        f"alpamayo_planner: configuration error: {line}"


def test_an_invalid_topic_name_stops_the_sensors_with_one_line(ros_process):
    proc = ros_process("synthetic_sensors", params={"odometry_topic": "odom/"})
    assert proc.wait_exit(timeout=30.0) == 2
    assert "odometry_topic: have 'odom/', need a valid ROS topic name (topic name must not " \
        "end with a forward slash)" in _one_error_line(proc.output(), "synthetic_sensors: ")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_the_replay_reports_a_damaged_checkpoint_with_exit_2(tiny_root, tmp_path, capsys,
                                                            damage):
    checkpoint, named, needle = _damaged_copy(tiny_root, tmp_path, damage)
    summary = write_bag(tmp_path / "bag", duration_s=1.0)
    params = tmp_path / "params.yaml"
    make_bag.write_parameter_file(params, make_bag.planner_parameters_for(summary))
    code = replay.main([str(tmp_path / "bag"), "--params", str(params), "-o",
                        str(tmp_path / "out"), "--quiet", "--no-plot", "--backend", "alpamayo",
                        "--checkpoint", str(checkpoint), "--device", "cpu"])
    assert code == 2
    err = capsys.readouterr().err
    line = _one_error_line(err, "alpamayo-replay: error: ")
    assert needle in line and str(named) in line
