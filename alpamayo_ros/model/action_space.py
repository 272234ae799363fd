"""Unicycle action space of Alpamayo-R1: normalised (acceleration, curvature) per 0.1 s step.

Frames and units: every trajectory here lives in the t0 frame (rear axle at t0, x forward,
y left, z up, metres); headings are yaw angles [rad] about +z; speeds m/s, accelerations
m/s^2, curvatures 1/m. History: 16 poses at t0-1.5 .. t0 (the last is the origin).
Future / actions: 64 steps; waypoint i is at t0 + dt * (i + 1).

Tensors are batch-first (``...`` leading dims allowed) and computed in float32 like the
official code (float64 input stays float64).

The inverse maps (v0 fit, traj_to_action) are Tikhonov-regularised least-squares problems
solved by Cholesky on their normal equations. They are hand-written rather than taken from
scipy because they must run on the model's device inside torch and reproduce the official
float32 numbers (scipy works in float64 on the CPU only).

Batch invariance: the fits differentiate positions twice, so they amplify last-bit float32
differences about a hundredfold (a 2e-5 m change of a 96 m waypoint moves a normalised
action by 1e-3). Batched float32 kernels do not give the same last bits for a row whatever
the batch: matrix-vector products pick their reduction order by batch size, and vectorised
sin/cos take a scalar path for the tail of a buffer, which depends on the batch layout and
on the CPU (AVX2 vs AVX-512). The official code runs these fits batched, so its per-row
results depend on the batch too. Here the fits run one row at a time (`_per_row`): a row's
result is a function of its own inputs only, bit for bit, on any CPU. The forward model
(`action_to_traj`) integrates and does not amplify; it stays batched.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

import torch

from alpamayo_ros.core.errors import CheckpointError, ModelInputError

__all__ = ["ActionSpaceConfig", "UnicycleActionSpace"]

# Below this speed [m/s] at either end of a step the curvature label is set to 0: heading
# changes while (nearly) standing still do not define a curvature.
LOW_SPEED_CURVATURE_THRESHOLD = 0.6
# How often a singular smoothing system is retried with a 10x larger ridge.
_MAX_RIDGE_RETRIES = 6


@dataclass(frozen=True)
class ActionSpaceConfig:
    """Constants of ``UnicycleAccelCurvatureActionSpace`` (defaults: the released model).

    accel_mean/std [m/s^2] and curvature_mean/std [1/m] normalise the actions;
    accel_bounds / curvature_bounds: plausible ranges (curvature labels are clamped to
    them); dt [s]: step; n_waypoints: steps per trajectory; *_lambda: smoothness weights and
    *_ridge: ridge weights of the least-squares fits (theta: heading, v: speed,
    a: acceleration, kappa: curvature).
    """

    accel_mean: float = 0.02902694707164455
    accel_std: float = 0.6810426736454882
    curvature_mean: float = 0.0002692167976330542
    curvature_std: float = 0.026148280660833106
    accel_bounds: tuple[float, float] = (-9.8, 9.8)
    curvature_bounds: tuple[float, float] = (-0.33, 0.33)
    dt: float = 0.1
    n_waypoints: int = 64
    theta_lambda: float = 1e-6
    theta_ridge: float = 1e-8
    v_lambda: float = 1e-6
    v_ridge: float = 1e-4
    a_lambda: float = 1e-4
    a_ridge: float = 1e-4
    kappa_lambda: float = 1e-4
    kappa_ridge: float = 1e-4

    def __post_init__(self):
        if self.accel_std <= 0 or self.curvature_std <= 0:
            raise CheckpointError(f"action std must be > 0, have accel_std {self.accel_std}, "
                                  f"curvature_std {self.curvature_std}")
        if self.dt <= 0 or self.n_waypoints < 1:
            raise CheckpointError(f"need dt > 0 and n_waypoints >= 1, have dt {self.dt}, "
                                  f"n_waypoints {self.n_waypoints}")

    @classmethod
    def from_checkpoint_config(cls, cfg: Mapping[str, Any]) -> "ActionSpaceConfig":
        """Read ``action_space_cfg`` of a checkpoint config.json dict (or that sub-dict).

        The normalisation statistics are required; the other fields fall back to the
        official constructor defaults, which equal the released values.
        """
        sub = cfg.get("action_space_cfg", cfg)
        if not isinstance(sub, Mapping):
            raise CheckpointError(f"action_space_cfg must be a dict, have {type(sub).__name__}")
        target = str(sub.get("_target_", "UnicycleAccelCurvatureActionSpace"))
        if not target.endswith("UnicycleAccelCurvatureActionSpace"):
            raise CheckpointError(f"action space {target!r} is not supported, need "
                                  f"UnicycleAccelCurvatureActionSpace")
        required = ("accel_mean", "accel_std", "curvature_mean", "curvature_std")
        missing = [k for k in required if k not in sub]
        if missing:
            raise CheckpointError(f"action_space_cfg lacks {missing}")
        kwargs: dict[str, Any] = {}
        for name, field_ in cls.__dataclass_fields__.items():
            if name not in sub:
                continue
            value = sub[name]
            if name.endswith("_bounds"):
                value = tuple(float(v) for v in value)
            elif name == "n_waypoints":
                value = int(value)
            else:
                value = float(value)
            kwargs[name] = value
        return cls(**kwargs)


def _yaw(rot: torch.Tensor) -> torch.Tensor:
    """Yaw [rad] of (..., 3, 3) rotation matrices: atan2(R[1,0], R[0,0])."""
    return torch.atan2(rot[..., 1, 0], rot[..., 0, 0])


def _unwrap(angle: torch.Tensor) -> torch.Tensor:
    """Unwrap along the last dim so consecutive differences lie in [-pi, pi]."""
    step = torch.diff(angle, dim=-1)
    step = torch.atan2(torch.sin(step), torch.cos(step))
    return torch.cat([angle[..., :1], angle[..., :1] + torch.cumsum(step, dim=-1)], dim=-1)


def _yaw_to_rot(yaw: torch.Tensor) -> torch.Tensor:
    """(...,) yaw [rad] -> (..., 3, 3) rotations about +z."""
    c, s = torch.cos(yaw), torch.sin(yaw)
    zero, one = torch.zeros_like(yaw), torch.ones_like(yaw)
    return torch.stack([torch.stack([c, -s, zero], -1), torch.stack([s, c, zero], -1),
                        torch.stack([zero, zero, one], -1)], dim=-2)


def _smoothness_gram(n: int, order: int, weight: float, like: torch.Tensor) -> torch.Tensor:
    """weight * D^T D for the order-th finite difference D of n samples, as an (n, n) matrix."""
    eye = torch.eye(n, dtype=like.dtype, device=like.device)
    diff = torch.diff(eye, n=order, dim=0)  # rows like [-1, 3, -3, 1] for order 3
    return weight * (diff.transpose(0, 1) @ diff)


def _cholesky_solve(lhs: torch.Tensor, rhs: torch.Tensor, ridge: float) -> torch.Tensor:
    """Solve (lhs + ridge I) x = rhs for batched SPD systems; x has rhs's shape (..., n).

    A system that is not positive definite (e.g. curvature at standstill) is retried with a
    ten times larger ridge, as the official solver does.
    """
    eye = torch.eye(lhs.shape[-1], dtype=lhs.dtype, device=lhs.device)
    for _ in range(_MAX_RIDGE_RETRIES + 1):
        factor, info = torch.linalg.cholesky_ex(lhs + ridge * eye)
        if not bool((info != 0).any()):
            return torch.cholesky_solve(rhs.unsqueeze(-1), factor).squeeze(-1)
        ridge *= 10.0
    raise ModelInputError(f"least-squares system stays singular up to ridge {ridge:g}")


def _per_row(fn, batch_shape: torch.Size, *tensors: torch.Tensor) -> torch.Tensor:
    """fn applied to each batch row on its own (batch of one), results stacked back.

    tensors all start with `batch_shape`; fn maps tensors with leading dim 1 to one tensor
    with leading dim 1. See the module docstring (batch invariance) for why.
    """
    n_dims = len(batch_shape)
    flat = [t.reshape(-1, *t.shape[n_dims:]) for t in tensors]
    rows = [fn(*(t[i:i + 1] for t in flat)) for i in range(flat[0].shape[0])]
    if not rows:
        raise ModelInputError(f"need at least one trajectory, have batch shape "
                              f"{tuple(batch_shape)}")
    out = torch.cat(rows, dim=0)
    return out.reshape(*batch_shape, *out.shape[1:])


def _speed_design(theta: torch.Tensor) -> torch.Tensor:
    """(..., 2N, N+1) matrix A of the trapezoid rule: rows 2k, 2k+1 give the x, y parts of
    v_k u_k + v_{k+1} u_{k+1}, with u = (cos theta, sin theta)."""
    n = theta.shape[-1] - 1
    a = theta.new_zeros(*theta.shape[:-1], 2 * n, n + 1)
    rows, cols = torch.arange(n, device=theta.device) * 2, torch.arange(n, device=theta.device)
    cos, sin = torch.cos(theta), torch.sin(theta)
    a[..., rows, cols] = cos[..., :-1]
    a[..., rows, cols + 1] = cos[..., 1:]
    a[..., rows + 1, cols] = sin[..., :-1]
    a[..., rows + 1, cols + 1] = sin[..., 1:]
    return a


class UnicycleActionSpace:
    """Maps normalised (accel, curvature) actions to t0-frame trajectories and back."""

    def __init__(self, config: ActionSpaceConfig = ActionSpaceConfig()):
        self.config = config

    # -- helpers --------------------------------------------------------------------------
    @staticmethod
    def _float(x) -> torch.Tensor:
        t = torch.as_tensor(x)
        return t if t.dtype in (torch.float32, torch.float64) else t.to(torch.float32)

    def _check_history(self, hist_xyz: torch.Tensor, hist_rot: torch.Tensor) -> None:
        if hist_xyz.ndim < 2 or hist_xyz.shape[-1] != 3 or hist_xyz.shape[-2] < 2:
            raise ModelInputError(f"history xyz must be (..., T>=2, 3), have "
                                  f"{tuple(hist_xyz.shape)}")
        if hist_rot.shape != (*hist_xyz.shape[:-1], 3, 3):
            raise ModelInputError(f"history rot must be {(*hist_xyz.shape[:-1], 3, 3)}, have "
                                  f"{tuple(hist_rot.shape)}")

    # -- v0 -------------------------------------------------------------------------------
    def estimate_v0(self, hist_xyz, hist_rot) -> torch.Tensor:
        """Speed at t0 [m/s] fitted to all history poses: (..., T, 3), (..., T, 3, 3) -> (...,).

        Solves min_v sum_k |v_k u_k + v_{k+1} u_{k+1} - 2 dp_k / dt|^2
        + v_lambda / dt^6 |D3 v|^2 + v_ridge |v|^2 (trapezoid rule over the T-1 steps,
        u from the unwrapped history yaw) and returns the last speed.
        """
        xyz = self._float(hist_xyz)
        rot = self._float(hist_rot).to(xyz.dtype)
        self._check_history(xyz, rot)
        return _per_row(self._fit_history_speeds, xyz.shape[:-2], xyz, rot)[..., -1]

    def _fit_history_speeds(self, xyz: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
        """(..., T) speeds fitted to the history poses (..., T, 3), (..., T, 3, 3)."""
        cfg = self.config
        dxy = torch.diff(xyz[..., :2], dim=-2)
        theta = _unwrap(_yaw(rot))
        design = _speed_design(theta)
        target = (2.0 / cfg.dt * dxy).flatten(-2)
        gram = design.transpose(-1, -2) @ design
        rhs = (design.transpose(-1, -2) @ target.unsqueeze(-1)).squeeze(-1)
        gram = gram + _smoothness_gram(theta.shape[-1], 3, cfg.v_lambda / cfg.dt ** 6, gram)
        return _cholesky_solve(gram, rhs, cfg.v_ridge)

    # -- forward model --------------------------------------------------------------------
    def action_to_traj(self, action_norm, hist_xyz, hist_rot,
                       v0: Optional[torch.Tensor] = None) -> dict[str, torch.Tensor]:
        """Integrate normalised actions (..., N, 2) from the t0 state.

        v0: (...,) speed at t0 [m/s]; fitted from the history when None. Starting at
        x = y = yaw = 0, each step applies a constant acceleration a_i and curvature k_i:
        v_{i+1} = v_i + a_i dt, yaw_{i+1} = yaw_i + k_i v_i dt + k_i a_i dt^2 / 2, and the
        position advances by the trapezoid of the two end velocities.
        Returns xyz (..., N, 3) with z = history z at t0, rot (..., N, 3, 3), and yaw [rad],
        speed [m/s] at each waypoint, acceleration [m/s^2] and curvature [1/m] of the step
        that ends there, each (..., N).
        """
        cfg = self.config
        action = self._float(action_norm)
        xyz = self._float(hist_xyz).to(action.dtype)
        rot = self._float(hist_rot).to(action.dtype)
        self._check_history(xyz, rot)
        if action.shape[-1] != 2 or action.shape[:-2] != xyz.shape[:-2]:
            raise ModelInputError(f"action must be {(*xyz.shape[:-2], 'N', 2)}, have "
                                  f"{tuple(action.shape)}")
        accel = action[..., 0] * cfg.accel_std + cfg.accel_mean
        kappa = action[..., 1] * cfg.curvature_std + cfg.curvature_mean
        if v0 is None:
            v0 = self.estimate_v0(xyz, rot)
        v0 = torch.as_tensor(v0, dtype=action.dtype, device=action.device)
        v0 = v0.expand(action.shape[:-2]).unsqueeze(-1)
        dt = cfg.dt
        speed = torch.cat([v0, v0 + torch.cumsum(accel * dt, dim=-1)], dim=-1)
        yaw = torch.cat([torch.zeros_like(v0),
                         torch.cumsum(kappa * speed[..., :-1] * dt, dim=-1)
                         + torch.cumsum(kappa * accel * (0.5 * dt ** 2), dim=-1)], dim=-1)
        half = 0.5 * dt
        x = (torch.cumsum(speed[..., :-1] * torch.cos(yaw[..., :-1]) * half, dim=-1)
             + torch.cumsum(speed[..., 1:] * torch.cos(yaw[..., 1:]) * half, dim=-1))
        y = (torch.cumsum(speed[..., :-1] * torch.sin(yaw[..., :-1]) * half, dim=-1)
             + torch.cumsum(speed[..., 1:] * torch.sin(yaw[..., 1:]) * half, dim=-1))
        z = xyz[..., -1:, 2].expand_as(x)
        return {
            "xyz": torch.stack([x, y, z], dim=-1),
            "rot": _yaw_to_rot(yaw[..., 1:]),
            "yaw": yaw[..., 1:],
            "speed": speed[..., 1:],
            "acceleration": accel,
            "curvature": kappa,
        }

    # -- inverse model --------------------------------------------------------------------
    def traj_to_action(self, hist_xyz, hist_rot, fut_xyz, fut_rot,
                       v0: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Normalised actions (..., N, 2) that best reproduce a future trajectory.

        fut_xyz (..., N, 3), fut_rot (..., N, 3, 3) at t0 + dt*(i+1), N = n_waypoints.
        Steps: (1) heading: the unwrapped future yaw smoothed with a 3rd-difference penalty,
        pinned to 0 at t0; (2) speeds: the trapezoid fit of the position steps with v pinned
        to v0; (3) acceleration: fit of dv/dt with a 2nd-difference penalty; (4) curvature:
        fit of yaw steps = k * (v dt + a dt^2 / 2) with a 2nd-difference penalty, clamped to
        curvature_bounds and set to 0 where either end speed is below 0.6 m/s.
        """
        cfg = self.config
        hxyz = self._float(hist_xyz)
        hrot, fxyz, frot = (self._float(t).to(hxyz.dtype) for t in (hist_rot, fut_xyz, fut_rot))
        self._check_history(hxyz, hrot)
        n = cfg.n_waypoints
        if fxyz.shape != (*hxyz.shape[:-2], n, 3) or frot.shape != (*fxyz.shape, 3):
            raise ModelInputError(f"future must be xyz {(*hxyz.shape[:-2], n, 3)} and rot "
                                  f"{(*hxyz.shape[:-2], n, 3, 3)}, have {tuple(fxyz.shape)} "
                                  f"and {tuple(frot.shape)}")
        if v0 is None:
            v0 = self.estimate_v0(hxyz, hrot)
        v0 = torch.as_tensor(v0, dtype=hxyz.dtype, device=hxyz.device).expand(hxyz.shape[:-2])
        return _per_row(self._fit_actions, hxyz.shape[:-2], hxyz, frot, fxyz, v0)

    def _fit_actions(self, hxyz: torch.Tensor, frot: torch.Tensor, fxyz: torch.Tensor,
                     v0: torch.Tensor) -> torch.Tensor:
        """Normalised actions (..., N, 2) of checked inputs; see traj_to_action."""
        cfg = self.config
        dt = cfg.dt
        theta = self._smooth_heading(frot)                                  # (..., N+1)
        xy = torch.cat([hxyz[..., -1:, :2], fxyz[..., :2]], dim=-2)
        speed = self._fit_future_speeds(torch.diff(xy, dim=-2), theta, v0)  # (..., N+1)
        accel = self._fit_slope(torch.ones_like(speed[..., 1:]),
                                torch.diff(speed, dim=-1) / dt, cfg.a_lambda, cfg.a_ridge)
        arc = dt * speed[..., :-1] + (dt ** 2) / 2.0 * accel
        kappa = self._fit_slope(arc, torch.diff(theta, dim=-1), cfg.kappa_lambda,
                                cfg.kappa_ridge)
        kappa = kappa.clamp(min=cfg.curvature_bounds[0], max=cfg.curvature_bounds[1])
        slow = ((speed[..., :-1].abs() < LOW_SPEED_CURVATURE_THRESHOLD)
                | (speed[..., 1:].abs() < LOW_SPEED_CURVATURE_THRESHOLD))
        kappa = torch.where(slow, torch.zeros_like(kappa), kappa)
        return torch.stack([(accel - cfg.accel_mean) / cfg.accel_std,
                            (kappa - cfg.curvature_mean) / cfg.curvature_std], dim=-1)

    def _smooth_heading(self, fut_rot: torch.Tensor) -> torch.Tensor:
        """(..., N+1) heading: 0 at t0, then the smoothed unwrapped future yaw."""
        cfg = self.config
        target = _unwrap(_yaw(fut_rot))
        n = target.shape[-1]
        # Unknowns theta_1..theta_N with theta_0 = 0 fixed: data term |theta - target|^2.
        penalty = _smoothness_gram(n + 1, 3, cfg.theta_lambda / cfg.dt ** 6, target)
        lhs = torch.eye(n, dtype=target.dtype, device=target.device) + penalty[1:, 1:]
        solved = _cholesky_solve(lhs.expand(*target.shape[:-1], n, n), target, cfg.theta_ridge)
        return torch.cat([torch.zeros_like(solved[..., :1]), solved], dim=-1)

    def _fit_future_speeds(self, dxy: torch.Tensor, theta: torch.Tensor,
                           v0: torch.Tensor) -> torch.Tensor:
        """(..., N+1) speeds from N position steps and N+1 headings, with v_0 = v0 fixed."""
        cfg = self.config
        design = _speed_design(theta)
        target = (2.0 / cfg.dt * dxy).flatten(-2)
        gram = design.transpose(-1, -2) @ design
        penalty = _smoothness_gram(theta.shape[-1], 3, cfg.v_lambda / cfg.dt ** 6, gram)
        rhs = (design[..., 1:].transpose(-1, -2) @ target.unsqueeze(-1)).squeeze(-1)
        # Move the known v_0 column to the right-hand side.
        rhs = rhs - gram[..., 1:, 0] * v0.unsqueeze(-1) - penalty[1:, 0] * v0.unsqueeze(-1)
        lhs = gram[..., 1:, 1:] + penalty[1:, 1:]
        solved = _cholesky_solve(lhs, rhs, cfg.v_ridge)
        return torch.cat([v0.unsqueeze(-1), solved], dim=-1)

    def _fit_slope(self, slope: torch.Tensor, target: torch.Tensor, lam: float,
                   ridge: float) -> torch.Tensor:
        """x minimising sum (x_i s_i - y_i)^2 + lam / dt^4 |D2 x|^2 + ridge |x|^2."""
        n = target.shape[-1]
        penalty = _smoothness_gram(n, 2, lam / self.config.dt ** 4, target)
        lhs = torch.diag_embed(slope * slope) + penalty
        return _cholesky_solve(lhs, slope * target, ridge)
