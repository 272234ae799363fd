"""History interpolation: analytic circle, exact 1.5 s span, extrapolation/gap refusal, offset."""
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from alpamayo_ros.core.errors import InputNotReady
from alpamayo_ros.core.geometry import Pose
from alpamayo_ros.core.history import OdometryTrack, build_history
from alpamayo_ros.core.types import HISTORY_OFFSETS
from core_scenarios import EPOCH_NS, NS, CircleMotion, odometry_samples


def track_of(samples):
    return OdometryTrack(np.array([s[0] for s in samples], np.int64),
                         np.array([s[1] for s in samples]), np.array([s[2] for s in samples]))


def analytic_history(motion, t0):
    xyz = np.array([motion.local_pose(t0 + o, t0).position for o in HISTORY_OFFSETS])
    rot = np.array([motion.local_pose(t0 + o, t0).rotation for o in HISTORY_OFFSETS])
    return xyz, rot


@pytest.mark.parametrize("rate_hz", [50.0, 100.0])
def test_circle_history_matches_analytic_t0_frame_poses(rate_hz):
    motion = CircleMotion(speed=8.0, radius=50.0)
    # t0 deliberately between odometry samples.
    t0 = 2.0137
    track = track_of(odometry_samples(motion, 0.0, 3.0, rate_hz))
    result = build_history(track, EPOCH_NS + int(round(t0 * NS)), Pose.identity(),
                           method="spline")
    xyz, rot = analytic_history(motion, t0)
    assert np.max(np.linalg.norm(result.xyz - xyz, axis=1)) < 0.01
    assert np.max(np.abs(result.rot - rot)) < 1e-4
    # The history really moved (8 m/s x 1.5 s = 12 m), so the check is not trivial.
    assert np.linalg.norm(result.xyz[0]) == pytest.approx(12.0, abs=0.2)
    np.testing.assert_allclose(result.xyz[-1], 0.0, atol=0)
    np.testing.assert_allclose(result.rot[-1], np.eye(3), atol=0)
    # Exactly 1.5 s whatever the odometry rate (no message counting).
    assert result.span == pytest.approx(1.5, abs=1e-12)
    assert result.stamps_ns[-1] - result.stamps_ns[0] == 1_500_000_000
    assert np.all(np.diff(result.stamps_ns) == 100_000_000)
    # Samples inside [t0-1.5, t0]: 1.5 s x rate (+-1 depending on phase).
    assert abs(result.odometry_samples - 1.5 * rate_hz) <= 1
    # t0 pose in the odom frame is the interpolated pose at t0.
    expected_t0 = motion.base_pose(t0)
    assert np.linalg.norm(result.t0_pose_odom.position - expected_t0.position) < 0.01


def test_linear_interpolation_is_close_but_spline_is_closer():
    motion = CircleMotion(speed=8.0, radius=20.0)
    t0 = 2.05
    track = track_of(odometry_samples(motion, 0.0, 3.0, 10.0))
    xyz, _ = analytic_history(motion, t0)
    t0_ns = EPOCH_NS + int(round(t0 * NS))
    lin = build_history(track, t0_ns, Pose.identity(), method="linear")
    spl = build_history(track, t0_ns, Pose.identity(), method="spline")
    err_lin = np.max(np.linalg.norm(lin.xyz - xyz, axis=1))
    err_spl = np.max(np.linalg.norm(spl.xyz - xyz, axis=1))
    assert err_lin < 0.3
    assert err_spl < err_lin / 5


def test_refuses_to_extrapolate_past_newest_odometry():
    motion = CircleMotion()
    track = track_of(odometry_samples(motion, 0.0, 2.0, 50.0))
    t0_ns = EPOCH_NS + int(round(2.08 * NS))
    with pytest.raises(InputNotReady, match=r"newest sample is 0\.080 s before t0 "
                                            r"\(max_extrapolation 0\.05 s\)"):
        build_history(track, t0_ns, Pose.identity(), max_extrapolation=0.05)
    # Within the allowance it works and extrapolates at constant velocity.
    t0 = 2.03
    result = build_history(track, EPOCH_NS + int(round(t0 * NS)), Pose.identity(),
                           max_extrapolation=0.05)
    assert result.extrapolated == pytest.approx(0.03, abs=1e-9)
    xyz, _ = analytic_history(motion, t0)
    assert np.max(np.linalg.norm(result.xyz - xyz, axis=1)) < 0.02


def test_refuses_history_older_than_odometry():
    motion = CircleMotion()
    track = track_of(odometry_samples(motion, 1.0, 3.0, 50.0))
    with pytest.raises(InputNotReady, match=r"oldest sample is only 1\.200 s before t0"):
        build_history(track, EPOCH_NS + int(round(2.2 * NS)), Pose.identity(),
                      max_extrapolation=0.05)


def test_refuses_gap_in_odometry():
    motion = CircleMotion()
    samples = [s for s in odometry_samples(motion, 0.0, 3.5, 50.0)
               if not (EPOCH_NS + 1.2 * NS < s[0] < EPOCH_NS + 1.6 * NS)]
    track = track_of(samples)
    with pytest.raises(InputNotReady, match=r"gap of 0\.4[0-9]* s after t0-0\.8[0-9]* s "
                                            r"\(max_odometry_gap 0\.2 s\)"):
        build_history(track, EPOCH_NS + 2 * NS, Pose.identity(), max_odometry_gap=0.2)
    # The same gap outside the window does not matter.
    result = build_history(track, EPOCH_NS + int(3.5 * NS), Pose.identity(),
                           max_odometry_gap=0.2)
    assert result.max_gap <= 0.2 + 1e-9


def test_base_offset_applied_before_interpolation():
    motion = CircleMotion(speed=8.0, radius=30.0)
    # CARLA-like: the odometry child frame (vehicle centre) is 1.4 m ahead of and 0.5 m
    # above the rear axle, slightly pitched.
    offset = Pose.from_xyz_rpy((-1.4, 0.0, -0.5), (0.0, 0.02, 0.0))
    t0 = 2.0
    track = track_of(odometry_samples(motion, 0.0, 3.0, 50.0, base_in_child=offset))
    t0_ns = EPOCH_NS + int(round(t0 * NS))
    with_offset = build_history(track, t0_ns, offset)
    xyz, rot = analytic_history(motion, t0)
    assert np.max(np.linalg.norm(with_offset.xyz - xyz, axis=1)) < 0.01
    assert np.linalg.norm(with_offset.t0_pose_odom.position
                          - motion.base_pose(t0).position) < 0.01
    # Ignoring the offset gives a visibly different (wrong) t0 pose.
    without = build_history(track, t0_ns, Pose.identity())
    assert np.linalg.norm(without.t0_pose_odom.position
                          - motion.base_pose(t0).position) > 1.0


def test_needs_two_samples():
    track = track_of(odometry_samples(CircleMotion(), 0.0, 0.0, 50.0))
    with pytest.raises(InputNotReady, match="need >= 2 samples for the history, have 1"):
        build_history(track, EPOCH_NS, Pose.identity())


def test_rotation_yaw_follows_circle():
    motion = CircleMotion(speed=8.0, radius=40.0)
    track = track_of(odometry_samples(motion, 0.0, 3.0, 100.0))
    result = build_history(track, EPOCH_NS + 2 * NS, Pose.identity())
    yaw = Rotation.from_matrix(result.rot).as_euler("xyz")[:, 2]
    expected = 8.0 / 40.0 * np.asarray(HISTORY_OFFSETS)
    np.testing.assert_allclose(yaw, expected, atol=1e-5)


# ------------------------------------------------------------------ physical plausibility
def _noisy_track(motion, start_s, end_s, rate_hz, position_noise_m, heading_noise_deg, seed=0):
    rng = np.random.default_rng(seed)
    samples = odometry_samples(motion, start_s, end_s, rate_hz)
    out = []
    for stamp, xyz, quat in samples:
        noisy_xyz = xyz + rng.normal(0.0, position_noise_m, 3) * np.array([1, 1, 0.3])
        wobble = Rotation.from_euler("z", rng.normal(0.0, heading_noise_deg), degrees=True)
        out.append((stamp, noisy_xyz, (Rotation.from_quat(quat) * wobble).as_quat()))
    return out


def test_noisy_real_odometry_is_not_a_discontinuity():
    """2 cm / 0.3 deg noise at 100 Hz on a 15 m/s curve stays far below the limits."""
    from alpamayo_ros.core.history import MotionLimits
    motion = CircleMotion(speed=15.0, radius=60.0)
    track = track_of(_noisy_track(motion, 0.0, 3.0, 100.0, 0.02, 0.3))
    for t0 in np.arange(1.6, 2.9, 0.1):
        build_history(track, EPOCH_NS + int(round(t0 * NS)), Pose.identity(),
                      limits=MotionLimits())


@pytest.mark.parametrize("what, edit, pattern", [
    ("relocalisation", lambda xyz, quat: (xyz + [100.0, 0.0, 0.0], quat),
     r"implied speed \d+\.\d m/s between t0-1\.080 s and t0-0\.980 s exceeds 70 m/s"),
    ("small jump", lambda xyz, quat: (xyz + [0.0, 3.0, 0.0], quat),
     r"implied acceleration \d+\.\d m/s\^2 around t0-\d\.\d+ s exceeds 20 m/s\^2"),
    ("heading flip", lambda xyz, quat: (xyz, (Rotation.from_quat(quat)
                                              * Rotation.from_euler("z", 90, degrees=True)
                                              ).as_quat()),
     r"implied yaw rate \d+\.\d rad/s .* exceeds 2\.5 rad/s"),
])
def test_a_discontinuity_inside_the_window_is_refused(what, edit, pattern):
    """From 1.0 s on the pose is offset (a localisation re-initialisation): while the
    offset lies inside the history window, no history is built across it; once the whole
    window is after it, planning resumes."""
    from alpamayo_ros.core.history import MotionLimits
    from alpamayo_ros.core.plan_result import ReasonCode
    motion = CircleMotion(speed=8.0, radius=50.0)
    samples = [(s, *edit(xyz, quat)) if s >= EPOCH_NS + NS else (s, xyz, quat)
               for s, xyz, quat in odometry_samples(motion, 0.0, 4.0, 50.0)]
    track = track_of(samples)
    with pytest.raises(InputNotReady, match=pattern) as info:
        build_history(track, EPOCH_NS + int(2.0 * NS), Pose.identity(), limits=MotionLimits())
    assert info.value.code == ReasonCode.ODOMETRY_DISCONTINUITY, what
    after = build_history(track, EPOCH_NS + int(2.7 * NS), Pose.identity(),
                          limits=MotionLimits())
    assert np.linalg.norm(after.xyz[0]) == pytest.approx(12.0, abs=0.2)
