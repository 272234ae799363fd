"""PlannerCore end to end with the ConstantVelocityModel and scripted fake models."""
import numpy as np
import pytest

from alpamayo_ros.core.config import PlannerConfig
from alpamayo_ros.core.errors import InputNotReady
from alpamayo_ros.core.geometry import Pose
from alpamayo_ros.core.image_decode import EncodedImage
from alpamayo_ros.core.kinematic_model import ConstantVelocityModel
from alpamayo_ros.core.plan_result import ReasonCode
from alpamayo_ros.core.planner_core import InsertStatus, PlannerCore, PlanStatus
from alpamayo_ros.core.types import (InferenceOptions, ModelOutput, StageTimings,
                                     TrajectorySample)
from core_scenarios import EPOCH_NS, NS, Scenario, now_ns, odometry, rgb_image


def make_core(model=None, **config):
    return PlannerCore(PlannerConfig(**config), model or ConstantVelocityModel())


def test_tick_ok_outputs_t0_stamps_history_and_odom_path():
    scenario = Scenario()
    core = make_core()
    scenario.advance(core, 3.0)
    result = core.tick(now_ns(3.02))
    assert result.status == PlanStatus.OK, result.reason
    # t0 = min of the cameras' newest stamps: phases 0, 0.01, 0.02, 0.03 at 10 Hz give
    # newest 3.00, 2.91, 2.92, 2.93 -> 2.91 (slot 1's frame).
    assert result.t0_ns == now_ns(2.91)
    assert result.frame_stamps_ns.shape == (16,) and result.frame_skews.shape == (16,)
    assert result.camera_skew == pytest.approx(0.09)
    np.testing.assert_array_equal(
        result.waypoint_stamps_ns, result.t0_ns + np.arange(1, 65) * 100_000_000)
    assert result.history_span == pytest.approx(1.5)
    assert result.odometry_samples == 75
    assert result.v0 == pytest.approx(8.0, rel=1e-3)
    assert result.selected_index == 0 and result.selected.valid
    assert result.model_id == "constant_velocity"
    t0_s = 2.91
    t0_pose = scenario.motion.base_pose(t0_s)
    assert np.linalg.norm(result.t0_pose_odom.position - t0_pose.position) < 0.01
    # The odom path is the base path mapped by the pose AT t0, not the latest pose.
    cand = result.selected
    expected = cand.xyz @ result.t0_pose_odom.rotation.T + result.t0_pose_odom.position
    np.testing.assert_allclose(cand.xyz_odom, expected, atol=1e-9)
    np.testing.assert_allclose(cand.rot_odom, result.t0_pose_odom.rotation @ cand.rot,
                               atol=1e-12)
    latest = core.odometry_track().xyz[-1]
    assert np.linalg.norm(latest - t0_pose.position) > 0.3  # odometry runs 0.04 s ahead
    # On a circle the constant-velocity continuation matches the true future.
    truth = np.array([scenario.motion.base_pose(t0_s + 0.1 * (i + 1)).position
                      for i in range(64)])
    assert np.max(np.linalg.norm(cand.xyz_odom - truth, axis=1)) < 0.05
    assert result.timings.input_preparation > 0 and result.timings.model.total > 0


def test_base_offset_config_reaches_the_history():
    offset = Pose.from_xyz_rpy((-1.4, 0.0, -0.5), (0.0, 0.0, 0.0))
    scenario = Scenario(base_in_child=offset)
    core = make_core(base_offset_xyz=(-1.4, 0.0, -0.5))
    scenario.advance(core, 3.0)
    result = core.tick(now_ns(3.0))
    assert result.status == PlanStatus.OK, result.reason
    assert np.linalg.norm(result.t0_pose_odom.position
                          - scenario.motion.base_pose(2.91).position) < 0.01


@pytest.mark.parametrize("threads", [0, 3])
@pytest.mark.parametrize("camera_rate", [10.0, 30.0])
def test_each_frame_decoded_once_across_ticks(camera_rate, threads):
    """At the tick (no decode-ahead), one after another or in parallel: 16 frames on the
    first tick, then the 4 new ones; every frame decoded once."""
    scenario = Scenario(camera_rates=(camera_rate,) * 4)
    core = make_core(decode_threads=threads, decode_ahead=False)
    decodes = []
    for k in range(20):
        t = 2.0 + 0.1 * k
        scenario.advance(core, t)
        result = core.tick(now_ns(t + 0.005))
        assert result.status == PlanStatus.OK, result.reason
        decodes.append(result.decodes)
    assert decodes[0] == 16
    assert all(d == 4 for d in decodes[1:]), decodes
    counters = core.counters()
    assert counters.decodes == 16 + 4 * 19
    if threads == 0:  # (pool jobs that find their frame decoded count as hits as well)
        assert counters.decode_cache_hits == 12 * 19


@pytest.mark.parametrize("camera_rate", [10.0, 30.0])
def test_decode_ahead_leaves_nothing_to_decode_at_the_tick(camera_rate):
    """Once two ticks showed the tick rhythm, frames are decoded as they arrive (those a
    tick then would select, when its t0 is the one expected next): with the decoding
    threads idle, the tick decodes nothing and plans on the very frames a core decoding
    at the tick uses. Decode-ahead adds little work: t0s between two ticks' ones
    (30 Hz cameras, 10 Hz ticks) are not decoded ahead."""
    scenario, same = (Scenario(camera_rates=(camera_rate,) * 4) for _ in range(2))
    ahead, at_tick = make_core(decode_ahead=True), make_core(decode_ahead=False)
    for k in range(14):
        t = 2.0 + 0.1 * k
        scenario.advance(ahead, t)
        same.advance(at_tick, t)
        assert ahead.inputs.decoder.wait_idle(10.0)
        prepared = ahead.prepare(now_ns(t + 0.005))
        reference = at_tick.prepare(now_ns(t + 0.005))
        assert reference.decodes == (16 if k == 0 else 4)
        assert prepared.decodes == (reference.decodes if k < 2 else 0), k
        assert prepared.model_input.frame_keys == reference.model_input.frame_keys
        for mine, theirs in zip(prepared.model_input.frames, reference.model_input.frames):
            np.testing.assert_array_equal(mine, theirs)
    assert ahead.inputs.decoder.prefetched >= 4 * 12
    extra = ahead.counters().decodes - at_tick.counters().decodes
    assert 0 <= extra <= (0 if camera_rate == 10.0 else 4 * 12), extra
    ahead.close()
    # After close(), ticks still work (decoding on the calling thread).
    scenario.advance(ahead, 3.5)
    assert ahead.tick(now_ns(3.505)).status == PlanStatus.OK


def test_a_restarted_stream_never_gets_a_frame_decoded_before_the_restart():
    """Decoded frames are keyed by (epoch, slot, stamp): when the drive restarts from 0
    (a bag loop) the same stamps carry other images, and no frame decoded (or queued for
    decoding ahead) on the old timeline stands in for them."""
    class Brighter(Scenario):
        def image(self, slot, stamp_ns):
            return rgb_image(*self.image_size, value=stamp_ns // 1_000_000 + 17 * slot + 100)

    scenario = Scenario()
    core = make_core(decode_ahead=True)
    for t in np.arange(2.0, 3.05, 0.1):  # ticks: decoding ahead is on
        scenario.advance(core, t)
        before = core.prepare(now_ns(t + 0.005))
    assert core.inputs.decoder.prefetched > 0
    Brighter().advance(core, 3.0)
    assert core.inputs.decoder.wait_idle(10.0)
    after = core.prepare(now_ns(3.005))
    assert core.counters().time_jumps >= 4  # every stream restarted
    assert after.model_input.frame_keys[0][0] != before.model_input.frame_keys[0][0]
    assert [k[1:] for k in after.model_input.frame_keys] == \
        [k[1:] for k in before.model_input.frame_keys]  # the same stamps...
    for new, old in zip(after.model_input.frames, before.model_input.frames):
        assert int(new[0, 0, 0]) == (int(old[0, 0, 0]) + 100) % 256  # ...other images


def test_a_single_late_frame_is_rejected_for_its_stream_alone():
    """One frame stamped 2 s in the past (or a zero stamp) costs nothing but itself."""
    jumps = []
    scenario = Scenario()
    core = PlannerCore(PlannerConfig(), ConstantVelocityModel(), on_time_jump=jumps.append)
    scenario.advance(core, 3.0)
    before = core.buffered_counts()
    late = core.add_image(1, now_ns(0.5), rgb_image())
    assert late.status == InsertStatus.REJECTED and "out of order" in late.reason
    assert "1 of 3 in a row" in late.reason
    zero = core.add_image(2, 0, rgb_image())
    assert zero.status == InsertStatus.REJECTED and "zero stamp" in zero.reason
    assert core.buffered_counts() == before and jumps == []
    assert core.counters().out_of_order == 1 and core.counters().time_jumps == 0
    assert core.tick(now_ns(3.0)).ok


def test_alternating_zero_and_good_stamps_never_reset_and_plans_go_on():
    scenario = Scenario(end_s=6.0)
    core = make_core()
    ok = 0
    for k in range(30):
        t = 3.0 + 0.1 * k
        scenario.advance(core, min(t, 6.0))
        core.add_image(0, 0, rgb_image())
        core.add_image(0, now_ns(t) - 2 * NS, rgb_image())  # and an old one, alternating
        ok += core.tick(now_ns(min(t, 6.0))).ok
    counters = core.counters()
    assert counters.time_jumps == 0 and counters.resets == 0
    assert ok >= 25


def test_a_consistent_backward_jump_restarts_only_that_stream():
    jumps = []
    scenario = Scenario()
    core = PlannerCore(PlannerConfig(), ConstantVelocityModel(), on_time_jump=jumps.append)
    scenario.advance(core, 3.0)
    (frames, odometry) = core.buffered_counts()
    # Camera 1 alone restarts 2.5 s earlier (its driver restarted with another clock).
    results = [core.add_image(1, now_ns(0.5 + 0.1 * k), rgb_image()) for k in range(3)]
    assert [r.status for r in results] == [InsertStatus.REJECTED] * 2 + [InsertStatus.ADDED]
    assert results[2].time_jump is not None and jumps == [results[2].time_jump]
    assert results[2].time_jump.backwards == pytest.approx(2.21)
    counts = core.buffered_counts()
    assert counts[0][1] == 3  # the restarted stream keeps its three new frames
    assert counts[0][0] == frames[0] and counts[1] == odometry  # the others are untouched
    skipped = core.tick(now_ns(3.0))
    assert skipped.status == PlanStatus.SKIPPED
    assert skipped.reason_code in (ReasonCode.STALE_CAMERA, ReasonCode.CLOCK_RESET)
    # The whole system jumps back (simulator reset): each stream restarts, then plans again.
    fresh = Scenario(start_s=-20.0, end_s=-16.0)
    fresh.advance(core, -17.0)
    assert core.counters().time_jumps == 6  # camera 1 twice, cameras 0, 2, 3 and odometry once
    assert core.tick(now_ns(-17.0)).ok


def test_a_reset_makes_waiting_ticks_say_clock_reset():
    scenario = Scenario()
    core = make_core()
    scenario.advance(core, 3.0)
    core.reset(now_ns(3.0), "the node clock jumped back 5.000 s")
    result = core.tick(now_ns(3.1))
    assert result.reason_code == ReasonCode.CLOCK_RESET
    assert "the node clock jumped back 5.000 s" in result.reason
    assert core.counters().resets == 1


def test_a_reset_keeps_what_arrived_of_the_new_time_line_before_it():
    """Sensor data of a restarted simulator can arrive before the /clock that restarts the
    node clock: what belongs to the new time line (a stream that restarted on its own, the
    out-of-order samples held back) is kept, so the planner plans as soon as its history
    is full in the new time base, exactly as a fresh core would."""
    core = make_core()
    Scenario(start_s=0.0, end_s=20.0).advance(core, 20.0)   # the previous run
    # Sim time restarts 20 s back: 0.15 s of it arrives before the node clock jumps back
    # (odometry restarted on its own; two frames per camera only held back as out of
    # order, fewer than TIME_JUMP_CONFIRMATIONS).
    fresh = Scenario(start_s=-20.0, end_s=-16.0)
    fresh.advance(core, -19.85)
    core.reset(now_ns(-19.85), "the node clock jumped back 39.850 s")
    assert core.buffered_counts() == ((2, 2, 2, 2), 8)
    fresh.advance(core, -18.0)
    result = core.tick(now_ns(-18.0))
    reference = make_core()
    Scenario(start_s=-20.0, end_s=-16.0).advance(reference, -18.0)
    expected = reference.tick(now_ns(-18.0))
    assert result.ok and expected.ok
    assert result.history_span == expected.history_span
    np.testing.assert_array_equal(result.frame_stamps_ns, expected.frame_stamps_ns)
    np.testing.assert_array_equal(result.history_xyz, expected.history_xyz)
    # A stream that has not restarted keeps nothing of the old time line, even stamps
    # before the new clock's time.
    core = make_core()
    Scenario(start_s=0.0, end_s=4.0).advance(core, 4.0)
    core.reset(now_ns(5.0), "the node clock changed its time source")
    assert core.buffered_counts() == ((0, 0, 0, 0), 0)
    assert core.counters().resets == 1


def test_odometry_frame_change_restarts_the_history_with_its_own_code():
    scenario = Scenario()
    core = make_core()
    scenario.advance(core, 3.0)
    assert core.tick(now_ns(3.0)).ok
    change = core.add_odometry(odometry(now_ns(3.01), (0, 0, 0), (0, 0, 0, 1), "map"))
    assert change.frame_change is not None and "'odom'/'base_link' to 'map'" in \
        str(change.frame_change)
    result = core.tick(now_ns(3.05))
    assert result.status == PlanStatus.SKIPPED
    assert result.reason_code == ReasonCode.ODOMETRY_FRAME_CHANGE
    assert core.counters().odometry_frame_changes == 1


class _FrameWindow:
    """Feeds a core like Scenario.advance, but odometry stamped in [start, end) is in
    another frame ("map", 100 m away): a second localisation for a while."""

    def __init__(self, core, start_s, end_s):
        self.core, self.start_ns, self.end_ns = core, now_ns(start_s), now_ns(end_s)

    def add_image(self, *args):
        return self.core.add_image(*args)

    def add_odometry(self, sample):
        if self.start_ns <= sample.stamp_ns < self.end_ns:
            sample = odometry(sample.stamp_ns, sample.xyz + 100.0, sample.quat_xyzw, "map")
        return self.core.add_odometry(sample)


def _t0_s(now_s, phases=(0.0, 0.01, 0.02, 0.03), period=0.1):
    """t0 of a tick at now_s: the oldest of the cameras' newest stamps (Scenario cameras)."""
    return min(p + np.floor((now_s - p) / period + 1e-9) * period for p in phases)


def test_planning_resumes_at_the_first_tick_whose_history_is_whole_in_the_new_frame():
    """Odometry in another frame for 1 s (3.0 .. 4.0 s), then back: ticks whose history
    window reaches before the first sample of the frames now in use skip with
    ODOMETRY_FRAME_CHANGE; the first tick whose window starts at that sample (within
    max_extrapolation) plans, and so does every later one."""
    scenario = Scenario(end_s=7.0)
    core = make_core()
    feed = _FrameWindow(core, 3.0, 4.0)
    extrapolation = core.config.max_extrapolation
    outcomes = []
    for k in range(25, 65):
        t = 0.1 * k + 0.005
        scenario.advance(feed, t)
        result = core.tick(now_ns(t))
        outcomes.append((t, _t0_s(t), result))
    for t, t0, result in outcomes:
        if t < 3.0:
            assert result.ok, (t, result.reason)
            continue
        # The frames in use restarted at 3.0 s and (back) at 4.0 s (first samples).
        restart = 3.0 if t < 4.0 else 4.0
        whole = t0 - 1.5 >= restart - extrapolation - 1e-9
        if whole:
            assert result.ok, (t, result.reason)
        else:
            assert result.reason_code == ReasonCode.ODOMETRY_FRAME_CHANGE, (t, result.reason)
    resumed = [t for t, _, result in outcomes if t > 4.0 and result.ok]
    # The first OK tick after the switch back has t0 = 5.51 s (t0 - 1.5 s = 4.01 s; the
    # tick before has t0 = 5.41 s, 0.09 s short).
    assert resumed[0] == pytest.approx(5.605) and _t0_s(resumed[0]) == pytest.approx(5.51)
    assert core.counters().odometry_frame_changes == 2


def test_frames_alternating_between_two_odometry_frames_never_plan():
    """Two localisations publishing into one topic (map / odom alternately): every change
    restarts the history; no plan is OK, none is built across frames."""
    scenario = Scenario(end_s=6.0)
    core = make_core()
    for k in range(40):
        t = 0.1 * k + 2.0
        scenario.advance(core, t)
        frame = "map" if k % 2 else "odom"
        core.add_odometry(odometry(now_ns(t) + 1, (100.0 * (k % 2), 0, 0), (0, 0, 0, 1),
                                   frame))
        if k > 5:
            result = core.tick(now_ns(t))
            assert not result.ok
            assert result.reason_code == ReasonCode.ODOMETRY_FRAME_CHANGE, result.reason


def test_stamps_ahead_of_the_tick_are_refused_for_the_tick():
    scenario = Scenario()
    core = make_core(max_stamp_lead=0.2)
    scenario.advance(core, 3.0)
    core.add_image(3, now_ns(3.5), rgb_image(value=3))
    result = core.tick(now_ns(3.0))
    assert result.reason_code == ReasonCode.FUTURE_STAMP
    assert "0.500 s ahead of the tick (max_stamp_lead 0.2 s)" in result.reason
    assert core.tick(now_ns(3.35)).ok


def test_stale_inputs_are_skipped_with_reason():
    scenario = Scenario()
    core = make_core(max_input_age=0.3, max_odometry_age=0.2)
    scenario.advance(core, 3.0)
    result = core.tick(now_ns(3.4))
    assert result.status == PlanStatus.SKIPPED
    assert "inputs stale: t0 is 0.490 s old at the tick (max_input_age 0.3 s)" in result.reason
    # Odometry stops at 2.5 s while cameras go on.
    scenario = Scenario()
    core = make_core(max_odometry_age=0.2)
    scenario.events = [e for e in scenario.events if e[1] == 0 or e[0] <= now_ns(2.5)]
    scenario.advance(core, 3.0)
    result = core.tick(now_ns(3.0))
    assert result.status == PlanStatus.SKIPPED
    assert "odometry stale: newest sample is 0.500 s old" in result.reason


def test_a_silent_camera_is_named_as_the_stale_input():
    """Camera slot 3 stops at 2.0 s while the others go on: the reason names slot 3, not
    the cameras whose frames around its old t0 have left the buffer."""
    scenario = Scenario()
    core = make_core(max_input_age=0.5)
    scenario.events = [e for e in scenario.events
                       if not (e[1] == 0 and e[2] == 3 and e[0] > now_ns(2.0))]
    scenario.advance(core, 3.5)
    result = core.tick(now_ns(3.5))
    assert result.status == PlanStatus.SKIPPED
    assert result.reason.startswith("inputs stale: t0 is 1.570 s old")  # frame at 1.93 s
    assert "newest frame of camera slot 3 (index 6" in result.reason


class FlakyModel:
    """Raises on the first call (like a CUDA OOM), then delegates."""

    model_id = "flaky"

    def __init__(self):
        self.calls = 0
        self.inner = ConstantVelocityModel()

    def predict(self, model_input, options=InferenceOptions(), initial_noise=None):
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner.predict(model_input, options)


def test_model_exception_gives_model_error_and_core_stays_usable():
    scenario = Scenario()
    core = make_core(model=FlakyModel())
    scenario.advance(core, 3.0)
    first = core.tick(now_ns(3.0))
    assert first.status == PlanStatus.MODEL_ERROR
    assert first.reason == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert first.t0_ns == now_ns(2.91) and first.candidates == []
    scenario.advance(core, 3.1)
    second = core.tick(now_ns(3.1))
    assert second.status == PlanStatus.OK
    counters = core.counters()
    assert counters.model_errors == 1 and counters.ok == 1


def sample(xyz, speed=8.0):
    n = len(xyz)
    return TrajectorySample(xyz=np.asarray(xyz, float), rot=np.tile(np.eye(3), (n, 1, 1)),
                            yaw=np.zeros(n), speed=np.full(n, speed), acceleration=np.zeros(n),
                            curvature=np.zeros(n))


def straight(v=8.0):
    t = 0.1 * np.arange(1, 65)
    return np.stack([v * t, np.zeros(64), np.zeros(64)], axis=1)


class ScriptedModel:
    model_id = "scripted"

    def __init__(self, samples, v0=8.0):
        self.samples, self.v0 = samples, v0

    def predict(self, model_input, options=InferenceOptions(), initial_noise=None):
        return ModelOutput(samples=self.samples, v0=self.v0, timings=StageTimings())


def test_output_checks_mark_candidates_and_select_first_valid():
    nan = straight()
    nan[10, 1] = np.nan
    backwards = straight()
    backwards[20:, 0] = backwards[20, 0] - 0.1 * np.arange(44)  # reverses 4.3 m
    scenario = Scenario()
    core = make_core(model=ScriptedModel([sample(nan), sample(backwards), sample(straight())]))
    scenario.advance(core, 3.0)
    result = core.tick(now_ns(3.0))
    assert result.status == PlanStatus.OK
    assert [c.valid for c in result.candidates] == [False, False, True]
    assert result.selected_index == 2
    assert result.candidates[0].invalid_reason == "xyz has 1 non-finite values"
    assert "backwards" in result.candidates[1].invalid_reason


def test_all_samples_invalid_gives_invalid_output():
    jump = straight()
    jump[:, 0] += 5.0  # first waypoint 5.8 m away at v0 = 8 m/s (expected 0.8 m)
    scenario = Scenario()
    core = make_core(model=ScriptedModel([sample(jump)]))
    scenario.advance(core, 3.0)
    result = core.tick(now_ns(3.0))
    assert result.status == PlanStatus.INVALID_OUTPUT
    assert result.selected_index == 0
    assert "first waypoint is 5.800 m from the origin, expected 0.800 m" in result.reason
    empty = make_core(model=ScriptedModel([]))
    Scenario().advance(empty, 3.0)
    assert empty.tick(now_ns(3.0)).reason == "model returned no samples"


def test_mixed_frame_sizes_skip_or_resize():
    scenario = Scenario(camera_phases=(0.0,) * 4)
    core = make_core()
    scenario.advance(core, 2.9)
    # Camera slot 2 changes resolution for its newest frame (t0 = 2.9 s).
    assert core.add_image(2, now_ns(2.9), rgb_image(10, 16)).status == InsertStatus.REPLACED
    result = core.tick(now_ns(2.95))
    assert result.status == PlanStatus.SKIPPED
    assert "frame sizes differ" in result.reason and "slot 2: 8x12/8x12/8x12/10x16" in result.reason
    resizing = make_core(output_image_size=(64, 48))
    Scenario(camera_phases=(0.0,) * 4).advance(resizing, 2.9)
    resizing.add_image(2, now_ns(2.9), rgb_image(10, 16))
    prepared = resizing.prepare(now_ns(2.95))
    assert np.stack(prepared.model_input.frames).shape == (16, 48, 64, 3)
    assert resizing.run(prepared).status == PlanStatus.OK


def test_prepare_run_split_and_prepare_raises_not_ready():
    core = make_core()
    with pytest.raises(InputNotReady, match="no frame received yet"):
        core.prepare(now_ns(0.0))
    scenario = Scenario()
    scenario.advance(core, 3.0)
    prepared = core.prepare(now_ns(3.0))
    assert prepared.t0_ns == now_ns(2.91)
    assert len(prepared.model_input.frames) == 16  # the cached frames, not a stacked copy
    frames = np.stack(prepared.model_input.frames)
    assert frames.shape == (16, 8, 12, 3) and frames.dtype == np.uint8
    # Camera-major, oldest first: frame 5 is slot 1's t0-0.2 frame, whose first byte
    # encodes its stamp in ms + 17 * slot.
    stamp_ms = (prepared.selection.frame_stamps_ns[5] // 1_000_000)
    assert frames[5, 0, 0, 0] == (stamp_ms + 17) % 256
    # New data after prepare does not change the prepared inputs.
    scenario.advance(core, 3.5)
    result = core.run(prepared)
    assert result.status == PlanStatus.OK and result.t0_ns == now_ns(2.91)
    np.testing.assert_array_equal(result.history_xyz, prepared.history.xyz)


def test_insertion_rejections_and_duplicates():
    core = make_core()
    bad = core.add_odometry(odometry(EPOCH_NS, (0.0, np.nan, 0.0), (0, 0, 0, 1)))
    assert bad.status == InsertStatus.REJECTED and "non-finite" in bad.reason
    assert core.add_odometry(odometry(EPOCH_NS, (0, 0, 0), (0, 0, 0, 0))).status == \
        InsertStatus.REJECTED
    far = core.add_odometry(odometry(EPOCH_NS, (0, 0, 0), (0, 0, 0, 2)))
    assert far.status == InsertStatus.REJECTED and "have norm 2.000000" in far.reason
    assert core.add_image(4, EPOCH_NS, rgb_image()).status == InsertStatus.REJECTED
    unsupported = core.add_image(0, EPOCH_NS, EncodedImage("16UC1", 2, 2, 4, b"\0" * 8))
    assert unsupported.status == InsertStatus.REJECTED and "16UC1" in unsupported.reason
    assert core.add_image(0, EPOCH_NS, rgb_image(value=1)).status == InsertStatus.ADDED
    assert core.add_image(0, EPOCH_NS, rgb_image(value=2)).status == InsertStatus.REPLACED
    # A quaternion of norm 1.05 is a rotation with rounding: normalised.
    assert core.add_odometry(odometry(EPOCH_NS, (0, 0, 0), (0, 0, 0, 1.05))).status == \
        InsertStatus.ADDED
    np.testing.assert_allclose(core.odometry_track().quat_xyzw[0], (0, 0, 0, 1))
    assert core.add_odometry(odometry(EPOCH_NS, (1, 0, 0), (0, 0, 0, 1))).status == \
        InsertStatus.REPLACED
    track = core.odometry_track()
    assert len(track) == 1 and track.xyz[0, 0] == 1.0
    counters = core.counters()
    assert counters.odometry_rejected == 3 and counters.frames_rejected == 2
    assert counters.frames_replaced == 1 and counters.odometry_replaced == 1


def test_too_old_insert_names_source_and_numbers():
    # A jump tolerance above the buffer duration leaves a band of stamps that are too old
    # to keep but no time jump.
    core = make_core(buffer_duration=1.0, time_jump_tolerance=2.0)
    assert core.add_image(2, now_ns(1.5), rgb_image()).status == InsertStatus.ADDED
    old = core.add_image(2, now_ns(0.2), rgb_image())
    assert old.status == InsertStatus.TOO_OLD and old.time_jump is None
    assert "camera slot 2 (index 2, cross_right_120fov)" in old.reason
    assert "1.300 s older than the newest" in old.reason and "keeps 1 s" in old.reason
    assert core.counters().frames_too_old == 1


def test_corrupt_frame_skips_tick_with_reason():
    scenario = Scenario(camera_phases=(0.0,) * 4)
    core = make_core()
    scenario.advance(core, 2.9)
    core.add_image(3, now_ns(2.9), EncodedImage("jpeg", 8, 12, 0, b"garbage"))
    result = core.tick(now_ns(2.95))
    assert result.status == PlanStatus.SKIPPED
    assert "camera slot 3 (index 6, front_tele_30fov): frame at" in result.reason
    assert "cannot be decoded: corrupt jpeg image" in result.reason


def test_concurrent_callbacks_while_ticking():
    import threading
    scenario = Scenario(end_s=6.0)
    core = make_core()
    scenario.advance(core, 2.0)
    stop = threading.Event()
    errors = []

    def feed():
        try:
            t = 2.0
            while t < 6.0 and not stop.is_set():
                t += 0.01
                scenario.advance(core, t)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    feeder = threading.Thread(target=feed)
    feeder.start()
    statuses = []
    try:
        for _ in range(30):
            newest = core.odometry_track().stamps_ns[-1]
            statuses.append(core.tick(int(newest)).status)
    finally:
        stop.set()
        feeder.join()
    assert not errors
    assert set(statuses) <= {PlanStatus.OK, PlanStatus.SKIPPED}
    assert statuses.count(PlanStatus.OK) >= 1


def test_frame_keys_name_each_frame_and_change_after_a_restart():
    """Keys let the model reuse work on frames it saw in the previous tick; a restarted
    stream may reuse stamps with other pixels, so a restart changes every key."""
    scenario = Scenario(end_s=6.0)
    core = make_core()
    scenario.advance(core, 3.0)
    first = core.prepare(now_ns(3.0))
    keys = first.model_input.frame_keys
    assert len(keys) == 16 and len(set(keys)) == 16
    assert [k[1] for k in keys] == [slot for slot in range(4) for _ in range(4)]
    assert [k[2] for k in keys] == [int(s) for s in first.selection.frame_stamps_ns]
    scenario.advance(core, 3.1)
    second = core.prepare(now_ns(3.1)).model_input.frame_keys
    assert len(set(keys) & set(second)) == 12  # 4 new frames at 10 Hz
    core.reset(now_ns(3.1), "test")
    scenario = Scenario(end_s=6.0)
    scenario.advance(core, 3.0)
    again = core.prepare(now_ns(3.0)).model_input.frame_keys
    assert [k[1:] for k in again] == [k[1:] for k in keys]
    assert not set(again) & set(keys)


def test_a_new_core_clears_the_models_vision_cache():
    """A model reused by a new core (the replay's next bag) sees the same keys again from
    epoch 0, for other pixels: the core makes it forget the features kept per key."""
    class Model(ConstantVelocityModel):
        cleared = 0

        def clear_vision_cache(self):
            self.cleared += 1

    model = Model()
    first = make_core(model)
    scenario = Scenario(end_s=4.0)
    scenario.advance(first, 3.0)
    keys = first.prepare(now_ns(3.0)).model_input.frame_keys
    assert model.cleared == 1
    second = make_core(model)
    assert model.cleared == 2
    Scenario(end_s=4.0).advance(second, 3.0)
    assert second.prepare(now_ns(3.0)).model_input.frame_keys == keys  # the same keys


def test_frames_smaller_than_the_model_accepts_skip_the_tick():
    """A model with min_frame_side: 1x1 px frames are SIZE_MISMATCH (an input problem named
    with both sizes), and the model is not called; resized frames plan."""
    class NeedsLargeFrames(ConstantVelocityModel):
        min_frame_side = 32
        calls = 0

        def predict(self, model_input, options=None, initial_noise=None):
            NeedsLargeFrames.calls += 1
            return super().predict(model_input, options)

    core = make_core(NeedsLargeFrames())
    Scenario(image_size=(1, 1)).advance(core, 3.0)
    result = core.tick(now_ns(3.0))
    assert result.status == PlanStatus.SKIPPED
    assert result.reason_code == ReasonCode.SIZE_MISMATCH
    assert "1x1 px (WxH) are smaller than the model accepts (32 px a side)" in result.reason
    assert NeedsLargeFrames.calls == 0
    resized = make_core(NeedsLargeFrames(), output_image_size=(64, 32))
    Scenario(image_size=(1, 1)).advance(resized, 3.0)
    assert resized.tick(now_ns(3.0)).ok
    assert NeedsLargeFrames.calls == 1
