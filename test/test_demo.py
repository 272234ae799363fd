"""The demo (`python -m alpamayo_ros.ros.demo`): real tiny model, real processes, a PNG."""
import json
import re
import subprocess
import sys

import pytest

import ros_harness

pytestmark = pytest.mark.ros


def _run_demo(tmp_path, domain_id, *args, timeout=240):
    env = ros_harness.ros_environment(domain_id, tmp_path / "ros_log")
    return subprocess.run([sys.executable, "-m", "alpamayo_ros.ros.demo",
                           "--output-dir", str(tmp_path / "out"), "--domain-id", str(domain_id),
                           *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.parametrize("family,model_type", [("r1", "alpamayo_r1"), ("1.5", "alpamayo1_5")])
def test_demo_plans_with_the_tiny_model_and_draws_a_png(tmp_path, ros_domain_id, family,
                                                        model_type):
    pytest.importorskip("torch")
    from PIL import Image

    done = _run_demo(tmp_path, ros_domain_id, "--cache-dir", str(tmp_path / "cache"),
                     "--seconds", "12", "--family", family)
    assert done.returncode == 0, done.stdout + done.stderr
    config = json.loads((tmp_path / "cache" / "checkpoint" / "config.json").read_text())
    assert config["model_type"] == model_type
    assert re.search(rf"model {model_type}-[0-9a-f]{{12}}", done.stdout), done.stdout[-2000:]
    plans = re.findall(r"plan +\d+: t0=\d+\.\d+ s  v0= *([\d.]+) m/s  first=.*latency=", done.stdout)
    assert plans and all(abs(float(v0) - 8.0) < 0.5 for v0 in plans)  # curved_drive starts at 8 m/s
    summary = re.search(r"summary: (\d+) plans OK", done.stdout)
    assert summary and int(summary.group(1)) == len(plans)
    walls = re.findall(r"latency=[\d.]+ s sim, ([\d.]+) s wall", done.stdout)
    assert len(walls) == len(plans) and all(float(w) > 0 for w in walls)
    with Image.open(tmp_path / "out" / "demo_topdown.png") as png:
        assert png.format == "PNG" and png.size[0] >= 400


def test_demo_without_plans_fails_clearly(tmp_path, ros_domain_id):
    done = _run_demo(tmp_path, ros_domain_id, "--backend", "constant_velocity",
                     "--seconds", "0", "--time-scale", "0.05", timeout=120)
    assert done.returncode == 1
    assert "error: no plan arrived" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out" / "demo_topdown.png").exists()


def test_demo_parameter_arguments_are_yaml_literals():
    from alpamayo_ros.ros.demo import _param

    assert _param("model.checkpoint_dir", "/data/it's here") == \
        ["-p", "model.checkpoint_dir:='/data/it''s here'"]
    assert _param("use_sim_time", True) == ["-p", "use_sim_time:=true"]
    assert _param("rate_hz", 2.0) == ["-p", "rate_hz:=2.0"]
