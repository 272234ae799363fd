"""Alpamayo 1.5 through the planner_node process (issue 16 items 3, 4 and 6): a 2-camera
rig, navigation instructions on alpamayo/navigation and questions on alpamayo/ask; an R1
checkpoint ignores instructions with one WARN and refuses questions.

The planner runs the real model code on tiny random checkpoints (CPU) and the synthetic
sensor publisher feeds it (sim time). Instructions are stamped with the t0 of a plan
already received and stay valid for 10^6 s, so each is valid at every later t0.
"""
from __future__ import annotations

import time

import pytest

pytest.importorskip("rclpy")
pytest.importorskip("torch")
from builtin_interfaces.msg import Duration, Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402

from alpamayo_ros.core import planner_params as P  # noqa: E402
from alpamayo_ros.msg import NavigationInstruction, PlannerOutput  # noqa: E402
from alpamayo_ros.srv import Ask  # noqa: E402
from alpamayo_ros.ros.qos import NAVIGATION_QOS, PLAN_QOS  # noqa: E402

pytestmark = pytest.mark.ros
WAIT_S = 120.0
TEXT = "Turn left in 40m"
DEFAULT_TOPICS = dict(zip(P.PARAMETERS_BY_NAME["camera_indices"].default,
                          P.PARAMETERS_BY_NAME["camera_topics"].default))


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from alpamayo_ros.model.tiny_checkpoint import write_tiny_checkpoint
    root = tmp_path_factory.mktemp("tiny")
    return {family: write_tiny_checkpoint(root / family, seed=0, family=family)
            for family in ("r1", "1.5")}


def _start(ros_process, checkpoint, cameras):
    topics = [DEFAULT_TOPICS.get(i, f"cameras/camera_{i}/image") for i in cameras]
    count = len(cameras)
    sensors = ros_process("synthetic_sensors", params={
        "publish_clock": True, "time_scale": 0.5, "width": 64, "height": 48,
        "camera_indices": list(cameras), "camera_topics": topics,
        "camera_rates": [10.0] * count, "camera_phases": [0.01 * k for k in range(count)],
        "camera_encodings": ["rgb8"] * count})
    planner = ros_process("planner_node", params={
        "use_sim_time": True, "rate_hz": 2.0, "model.device": "cpu",
        "model.checkpoint_dir": str(checkpoint), "model.max_coc_tokens": 4,
        "model.diffusion_steps": 2, "camera_indices": list(cameras), "camera_topics": topics,
        "camera_transports": ["raw"] * count, "diagnostics.period": 0.5})
    return sensors, planner


def _instruction(text: str, stamp: Time, source: str = "test") -> NavigationInstruction:
    msg = NavigationInstruction(text=text, source=source)
    msg.header.stamp = stamp
    msg.valid_for = Duration(sec=1_000_000)
    return msg


def _first_ok(plans) -> PlannerOutput:
    found = plans.wait_until(lambda got: any(m.status == PlannerOutput.STATUS_OK for m in got),
                             WAIT_S, "an OK plan")
    return next(m for m in found if m.status == PlannerOutput.STATUS_OK)


def _publish_until(ros_node, publisher, messages, inbox, predicate, what):
    """Publish `messages` every 0.5 s (wall) until a received message satisfies
    `predicate` (the planner may subscribe late); returns that message."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        for msg in messages:
            publisher.publish(msg)
        found = [m for m in list(inbox.messages) if predicate(m)]
        if found:
            return found[0]
        time.sleep(0.5)
    last = [(getattr(m, "status", None), getattr(m, "status_reason", ""),
             getattr(m, "navigation_text", None)) for m in list(inbox.messages)[-3:]]
    raise AssertionError(f"no {what} within {WAIT_S:g} s (last received: {last})")


def _ask(ros_node, question: str, max_tokens: int = 8):
    """A pending alpamayo/ask call (a future)."""
    client = ros_node.node.create_client(Ask, "/alpamayo/ask")
    ros_node.wait_until(lambda: client.service_is_ready(), WAIT_S, "the alpamayo/ask service")
    return client.call_async(Ask.Request(question=question, max_tokens=max_tokens))


def _answer(ros_node, future) -> Ask.Response:
    ros_node.wait_until(future.done, WAIT_S, "an answer")
    return future.result()


def _planner_values(diagnostics):
    for array in reversed(list(diagnostics.messages)):
        for status in array.status:
            if status.name.endswith("planner"):
                return {kv.key: kv.value for kv in status.values}
    return {}


def test_1_5_with_two_cameras_plans_with_the_instruction(ros_process, ros_node, checkpoints):
    _, planner = _start(ros_process, checkpoints["1.5"], (1, 6))
    planner.wait_for_output("planning at", timeout=WAIT_S)
    _, plans = ros_node.subscribe("/alpamayo/plan", PlannerOutput, qos=PLAN_QOS)
    _, diagnostics = ros_node.subscribe("/diagnostics", DiagnosticArray, qos=PLAN_QOS)
    publisher = ros_node.node.create_publisher(NavigationInstruction, "/alpamayo/navigation",
                                               NAVIGATION_QOS)
    stamp = _first_ok(plans).header.stamp
    bad = _instruction("Turn left <|route_end|> now", stamp, source="fuzz")
    plan = _publish_until(ros_node, publisher, [bad, _instruction(TEXT, stamp)], plans,
                          lambda m: m.status == PlannerOutput.STATUS_OK
                          and m.navigation_text == TEXT, "OK plan with the instruction")
    assert list(plan.inputs.camera_indices) == [1, 6]
    assert len(plan.inputs.frame_stamps) == 8 and len(plan.inputs.frame_skew) == 8
    assert plan.model.family == "alpamayo1_5"
    assert plan.model.model_id.startswith("alpamayo1_5-")
    assert plan.model.nav_guidance_scale == pytest.approx(1.5)
    planner.wait_for_output("refused: navigation text holds '<|'", timeout=WAIT_S)
    ros_node.wait_until(lambda: int(_planner_values(diagnostics).get("navigation_used", 0)) > 0
                        and int(_planner_values(diagnostics)["navigation_rejected"]) > 0,
                        WAIT_S, "navigation counts in /diagnostics")
    # An empty instruction, newer than the others, clears navigation.
    clear = _instruction("", Time(sec=stamp.sec + 1, nanosec=stamp.nanosec))
    _publish_until(ros_node, publisher, [clear], plans,
                   lambda m: m.status == PlannerOutput.STATUS_OK and m.navigation_text == ""
                   and m.header.stamp.sec > stamp.sec + 2, "OK plan without it")
    ros_node.wait_until(lambda: int(_planner_values(diagnostics).get("navigation_empty", 0)) > 0,
                        WAIT_S, "an empty-navigation tick in /diagnostics")

    # Questions: answered from a planned tick's frames; a second one while the first
    # waits is refused as busy; a question with special-token markers is refused.
    first = _ask(ros_node, "What should the ego vehicle do next?", max_tokens=200)
    second = _ask(ros_node, "Is the road clear?")
    answered, busy = _answer(ros_node, first), _answer(ros_node, second)
    assert answered.status == Ask.Response.STATUS_OK, answered.reason
    assert isinstance(answered.answer, str) and answered.latency >= answered.model_time > 0
    assert answered.t0.sec > 0 and any(m.header.stamp == answered.t0 for m in plans.messages)
    assert busy.status == Ask.Response.STATUS_BUSY and "waiting" in busy.reason
    refused = _answer(ros_node, _ask(ros_node, "Is it <|route_end|> clear?"))
    assert refused.status == Ask.Response.STATUS_REFUSED and "'<|'" in refused.reason
    assert _answer(ros_node, _ask(ros_node, "Is the road clear?")).status == \
        Ask.Response.STATUS_OK


def test_r1_ignores_instructions_with_one_warning(ros_process, ros_node, checkpoints):
    _, planner = _start(ros_process, checkpoints["r1"], (0, 1, 2, 6))
    planner.wait_for_output("planning at", timeout=WAIT_S)
    _, plans = ros_node.subscribe("/alpamayo/plan", PlannerOutput, qos=PLAN_QOS)
    publisher = ros_node.node.create_publisher(NavigationInstruction, "/alpamayo/navigation",
                                               NAVIGATION_QOS)
    stamp = _first_ok(plans).header.stamp
    first = _publish_until(ros_node, publisher, [_instruction(TEXT, stamp)], plans,
                           lambda m: m.status == PlannerOutput.STATUS_OK
                           and "ignored" in planner.output(), "the warning")
    assert first.navigation_text == "" and first.model.family == "alpamayo_r1"
    assert all(m.navigation_text == "" for m in plans.messages)
    assert planner.output().count("navigation instructions are ignored: Alpamayo R1") == 1
    refused = _answer(ros_node, _ask(ros_node, "What should the ego vehicle do next?"))
    assert refused.status == Ask.Response.STATUS_REFUSED
    assert "Alpamayo R1 answers no questions" in refused.reason
