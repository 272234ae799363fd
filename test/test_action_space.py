"""Tests of alpamayo_ros.model.action_space (unicycle accel/curvature action space)."""
from __future__ import annotations

import dataclasses
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import fixture_set
from alpamayo_ros.core.errors import CheckpointError, ModelInputError
from alpamayo_ros.model.action_space import ActionSpaceConfig, UnicycleActionSpace

SPACE = UnicycleActionSpace(ActionSpaceConfig())
CFG = SPACE.config


def _arc_history(speed: float, curvature: float, z: float = 0.0, n: int = 16, dt: float = 0.1):
    """t0-frame history of constant speed [m/s] and curvature [1/m] ending at the origin."""
    t = torch.arange(-(n - 1), 1, dtype=torch.float64) * dt
    yaw = speed * curvature * t
    if curvature == 0.0:
        x, y = speed * t, torch.zeros_like(t)
    else:
        x, y = torch.sin(yaw) / curvature, (1 - torch.cos(yaw)) / curvature
    xyz = torch.stack([x, y, torch.full_like(t, z)], -1)
    c, s = torch.cos(yaw), torch.sin(yaw)
    rot = torch.zeros(n, 3, 3, dtype=torch.float64)
    rot[:, 0, 0], rot[:, 0, 1], rot[:, 1, 0], rot[:, 1, 1], rot[:, 2, 2] = c, -s, s, c, 1
    return xyz.float()[None], rot.float()[None]


def _action_norm(accel: torch.Tensor, curvature: torch.Tensor) -> torch.Tensor:
    return torch.stack([(accel - CFG.accel_mean) / CFG.accel_std,
                        (curvature - CFG.curvature_mean) / CFG.curvature_std], -1)


# ------------------------------------------------------------------------------- v0 (unit)

def test_v0_of_straight_constant_speed_history():
    hist_xyz, hist_rot = _arc_history(8.0, 0.0)
    v0 = SPACE.estimate_v0(hist_xyz, hist_rot)
    assert v0.shape == (1,)
    assert v0.item() == pytest.approx(8.0, abs=1e-3)


def test_v0_of_constant_speed_curve_and_batch():
    straight = _arc_history(3.0, 0.0)
    curve = _arc_history(12.0, 0.05)
    xyz = torch.cat([straight[0], curve[0]])
    rot = torch.cat([straight[1], curve[1]])
    v0 = SPACE.estimate_v0(xyz, rot)
    assert v0.tolist() == pytest.approx([3.0, 12.0], abs=5e-3)


# ---------------------------------------------------------------------- forward model (unit)

def test_zero_action_drives_straight_at_v0_with_history_z():
    hist_xyz, hist_rot = _arc_history(5.0, 0.0, z=0.7)
    n = CFG.n_waypoints
    out = SPACE.action_to_traj(_action_norm(torch.zeros(1, n), torch.zeros(1, n)),
                               hist_xyz, hist_rot, v0=torch.tensor([5.0]))
    times = CFG.dt * torch.arange(1, n + 1)
    assert torch.allclose(out["xyz"][0, :, 0], 5.0 * times, atol=1e-4)
    assert torch.allclose(out["xyz"][0, :, 1], torch.zeros(n), atol=1e-4)
    assert torch.allclose(out["xyz"][0, :, 2], torch.full((n,), 0.7))
    assert torch.allclose(out["rot"][0], torch.eye(3).expand(n, 3, 3), atol=1e-5)
    assert torch.allclose(out["speed"][0], torch.full((n,), 5.0), atol=1e-5)
    for key in ("yaw", "speed", "acceleration", "curvature"):
        assert out[key].shape == (1, n)


def test_constant_curvature_follows_a_circle_and_acceleration_changes_speed():
    n, k, v0 = CFG.n_waypoints, 0.02, 6.0
    hist_xyz, hist_rot = _arc_history(v0, 0.0)
    out = SPACE.action_to_traj(_action_norm(torch.zeros(1, n), torch.full((1, n), k)),
                               hist_xyz, hist_rot, v0=torch.tensor([v0]))
    centre = torch.tensor([0.0, 1.0 / k])
    radius = (out["xyz"][0, :, :2] - centre).norm(dim=-1)
    assert torch.allclose(radius, torch.full((n,), 1.0 / k), atol=2e-3)
    times = CFG.dt * torch.arange(1, n + 1)
    assert torch.allclose(out["yaw"][0], k * v0 * times, atol=1e-4)
    assert torch.allclose(out["curvature"][0], torch.full((n,), k), atol=1e-6)
    brake = SPACE.action_to_traj(_action_norm(torch.full((1, n), -0.5), torch.zeros(1, n)),
                                 hist_xyz, hist_rot, v0=torch.tensor([v0]))
    assert torch.allclose(brake["speed"][0], v0 - 0.5 * times, atol=1e-4)


def test_traj_to_action_recovers_a_smooth_action():
    n = CFG.n_waypoints
    hist_xyz, hist_rot = _arc_history(9.0, 0.0)
    t = torch.arange(n, dtype=torch.float32) * CFG.dt
    action = _action_norm((0.4 * torch.sin(0.5 * t))[None], (0.01 * torch.cos(0.3 * t))[None])
    traj = SPACE.action_to_traj(action, hist_xyz, hist_rot)
    back = SPACE.traj_to_action(hist_xyz, hist_rot, traj["xyz"], traj["rot"])
    assert back.shape == action.shape
    # Regularised fit: small bias allowed; physical units: 0.05 m/s^2, 5e-4 1/m.
    assert (back[..., 0] - action[..., 0]).abs().max() * CFG.accel_std < 0.05
    assert (back[..., 1] - action[..., 1]).abs().max() * CFG.curvature_std < 5e-4
    again = SPACE.action_to_traj(back, hist_xyz, hist_rot)
    assert (again["xyz"] - traj["xyz"]).abs().max() < 0.05


def test_traj_to_action_zeroes_curvature_at_low_speed():
    n = CFG.n_waypoints
    hist_xyz, hist_rot = _arc_history(0.3, 0.0)
    action = _action_norm(torch.zeros(1, n), torch.full((1, n), 0.1))
    traj = SPACE.action_to_traj(action, hist_xyz, hist_rot, v0=torch.tensor([0.3]))
    back = SPACE.traj_to_action(hist_xyz, hist_rot, traj["xyz"], traj["rot"],
                                v0=torch.tensor([0.3]))
    curvature = back[..., 1] * CFG.curvature_std + CFG.curvature_mean
    assert torch.equal(curvature, torch.zeros_like(curvature))


def _batch_rows():
    """Three histories (straight, right and left curves) and random actions."""
    histories = [_arc_history(v, k) for v, k in [(4.0, 0.0), (10.0, -0.03), (15.0, 0.01)]]
    xyz = torch.cat([h[0] for h in histories])
    rot = torch.cat([h[1] for h in histories])
    action = torch.randn(3, CFG.n_waypoints, 2, generator=torch.Generator().manual_seed(0)) * 0.3
    return xyz, rot, action


def test_batch_equals_single_samples():
    """A row's result does not depend on the rest of the batch.

    The fits (v0, traj_to_action) run row by row, so they are bit-identical. The forward
    model runs batched: vectorised sin/cos may round the last bit differently for the tail
    of a buffer, so waypoints may differ by a few float32 ulps of their coordinates.
    """
    xyz, rot, action = _batch_rows()
    joint = SPACE.action_to_traj(action, xyz, rot)
    joint_v0 = SPACE.estimate_v0(xyz, rot)
    joint_back = SPACE.traj_to_action(xyz, rot, joint["xyz"], joint["rot"])
    ulps = 8 * torch.finfo(torch.float32).eps * joint["xyz"].abs().max().item()
    for b in range(3):
        rows = slice(b, b + 1)
        assert torch.equal(SPACE.estimate_v0(xyz[rows], rot[rows]), joint_v0[rows])
        single = SPACE.action_to_traj(action[rows], xyz[rows], rot[rows])
        torch.testing.assert_close(single["xyz"], joint["xyz"][rows], rtol=0.0, atol=ulps)
        single_back = SPACE.traj_to_action(xyz[rows], rot[rows], joint["xyz"][rows],
                                           joint["rot"][rows])
        assert torch.equal(single_back, joint_back[rows])


# Kernel sets of CPUs this suite runs on: ATen's vector ISA and MKL's instruction set.
_CPU_KERNEL_ENVS = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2",
             "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "no_simd": {"ATEN_CPU_CAPABILITY": "default", "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
                "ONEDNN_MAX_CPU_ISA": "SSE41"},
}


@pytest.mark.parametrize("kernels", sorted(_CPU_KERNEL_ENVS))
def test_batch_invariance_with_other_cpu_kernels(kernels, tmp_path):
    """The batch test holds with the kernels a CPU without AVX-512 selects (there the
    batched fit differed by 1.1e-3 from the single-row fit before the fits ran per row)."""
    env = {**os.environ, **_CPU_KERNEL_ENVS[kernels],
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent),
                                          str(Path(__file__).parent.parent)])}
    code = ("import test_action_space as t; t.test_batch_equals_single_samples(); "
            "import torch; print(torch.backends.cpu.get_cpu_capability())")
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_shape_errors_name_have_and_need():
    hist_xyz, hist_rot = _arc_history(5.0, 0.0)
    with pytest.raises(ModelInputError, match="history rot"):
        SPACE.estimate_v0(hist_xyz, hist_rot[:, :-1])
    with pytest.raises(ModelInputError, match="action must be"):
        SPACE.action_to_traj(torch.zeros(1, 64, 3), hist_xyz, hist_rot)
    with pytest.raises(ModelInputError, match="future must be"):
        SPACE.traj_to_action(hist_xyz, hist_rot, torch.zeros(1, 10, 3), torch.zeros(1, 10, 3, 3))


# ------------------------------------------------------------------------------- config

def test_config_from_checkpoint_config_and_errors():
    cfg = {"action_space_cfg": {"_target_": "x.UnicycleAccelCurvatureActionSpace",
                                "accel_mean": 0.1, "accel_std": 2.0, "curvature_mean": 0.0,
                                "curvature_std": 0.5, "accel_bounds": [-3, 3], "dt": 0.2}}
    config = ActionSpaceConfig.from_checkpoint_config(cfg)
    assert (config.accel_mean, config.accel_std, config.dt) == (0.1, 2.0, 0.2)
    assert config.accel_bounds == (-3.0, 3.0)
    assert config.v_lambda == ActionSpaceConfig().v_lambda
    with pytest.raises(CheckpointError, match="not supported"):
        ActionSpaceConfig.from_checkpoint_config({"action_space_cfg": {"_target_": "Other"}})
    with pytest.raises(CheckpointError, match="accel_std"):
        ActionSpaceConfig.from_checkpoint_config({"accel_mean": 0.0})
    with pytest.raises(CheckpointError, match="std must be > 0"):
        dataclasses.replace(config, curvature_std=0.0)


# ------------------------------------------------------------------------ golden fixture

RTOL, ATOL = 1e-5, 1e-4


def _fixture_space() -> UnicycleActionSpace:
    return UnicycleActionSpace(ActionSpaceConfig.from_checkpoint_config(
        fixture_set.checkpoint_config()))


@fixture_set.requires_fixtures
def test_fixture_config_fields_match_checkpoint():
    raw = fixture_set.checkpoint_config()["action_space_cfg"]
    config = _fixture_space().config
    for field in dataclasses.fields(ActionSpaceConfig):
        want = raw[field.name]
        have = getattr(config, field.name)
        assert (list(have) if isinstance(have, tuple) else have) == want, field.name


@fixture_set.requires_fixtures
def test_fixture_v0():
    hist_xyz, hist_rot = fixture_set.history_inputs()
    want = fixture_set.load_expected_tensors()["v0"]
    v0 = _fixture_space().estimate_v0(hist_xyz, hist_rot)
    torch.testing.assert_close(v0, want, rtol=RTOL, atol=ATOL)


@fixture_set.requires_fixtures
def test_fixture_fixed_action_trajectory():
    hist_xyz, hist_rot = fixture_set.history_inputs()
    expected = fixture_set.load_expected_tensors()
    out = _fixture_space().action_to_traj(fixture_set.load_inputs()["fixed_action_norm"],
                                          hist_xyz, hist_rot)
    torch.testing.assert_close(out["xyz"], expected["fixed_action_traj_xyz"], rtol=RTOL, atol=ATOL)
    torch.testing.assert_close(out["rot"], expected["fixed_action_traj_rot"], rtol=RTOL, atol=ATOL)
    assert torch.equal(out["xyz"][..., 2], hist_xyz[:, -1:, 2].expand(-1, out["xyz"].shape[1]))


@fixture_set.requires_fixtures
def test_fixture_future_to_action_and_round_trip():
    hist_xyz, hist_rot = fixture_set.history_inputs()
    inputs = fixture_set.load_inputs()
    expected = fixture_set.load_expected_tensors()
    space = _fixture_space()
    action = space.traj_to_action(hist_xyz, hist_rot, inputs["ego_future_xyz"][:, 0],
                                  inputs["ego_future_rot"][:, 0])
    torch.testing.assert_close(action, expected["future_traj_action_norm"], rtol=RTOL, atol=ATOL)
    out = space.action_to_traj(expected["future_traj_action_norm"], hist_xyz, hist_rot)
    torch.testing.assert_close(out["xyz"], expected["future_traj_roundtrip_xyz"], rtol=RTOL,
                               atol=ATOL)
    torch.testing.assert_close(out["rot"], expected["future_traj_roundtrip_rot"], rtol=RTOL,
                               atol=ATOL)
    # The round trip follows the recorded future as closely as the official one does:
    # positions and headings, whatever the set's motion (the bound is the set's own gap).
    future_xyz = inputs["ego_future_xyz"][:, 0]
    future_yaw = torch.atan2(inputs["ego_future_rot"][:, 0, :, 1, 0],
                             inputs["ego_future_rot"][:, 0, :, 0, 0])
    official_rot = expected["future_traj_roundtrip_rot"]
    official_yaw = torch.atan2(official_rot[..., 1, 0], official_rot[..., 0, 0])
    gap = (out["xyz"] - future_xyz).abs().max().item()
    official_gap = (expected["future_traj_roundtrip_xyz"] - future_xyz).abs().max().item()
    assert math.isfinite(gap) and gap <= official_gap + ATOL
    yaw_gap = _angle_gap(out["yaw"], future_yaw)
    assert yaw_gap <= _angle_gap(official_yaw, future_yaw) + ATOL


def _angle_gap(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference of two heading sequences [rad], modulo 2 pi."""
    d = a - b
    return torch.atan2(torch.sin(d), torch.cos(d)).abs().max().item()
