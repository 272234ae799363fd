"""The replay reads the node's navigation input (alpamayo/navigation) from the bag, as the
node subscribes to it: for a model family that takes navigation, each instruction goes
through the same InputStreams checks and reaches the tick's ModelInput and PlannerOutput."""
from __future__ import annotations

from alpamayo_ros.bag import bag_io
from alpamayo_ros.core.model_family import ALPAMAYO_1_5, R1
from alpamayo_ros.core.navigation import NAVIGATION_TOPIC
from alpamayo_ros.core.types import NS_PER_S, ModelDescription
from alpamayo_ros.replay import engine as replay_engine
from alpamayo_ros.replay.outputs import PLAN_TOPIC, write_plan_bag
from scenario_bags import job, parameters, write_bag
from test_core_navigation import RecordingModel

TEXT = "Turn left in 40m"


def _bag_with_navigation(tmp_path):
    """A scenario bag and a copy with one instruction (stamped 1 s in, valid 60 s) and one
    the checks refuse (control characters)."""
    summary = write_bag(tmp_path / "plain", duration_s=5.0)
    with bag_io.BagReader(tmp_path / "plain") as reader:
        start = reader.start_time_ns
        messages = list(reader.raw_messages())
    nav_cls = bag_io.msg_class(bag_io.NAVIGATION_TYPE)
    duration = bag_io.msg_class("builtin_interfaces/msg/Duration")

    def instruction(at_s: float, text: str):
        stamp = start + int(at_s * NS_PER_S)
        msg = nav_cls(header=bag_io.header(stamp, ""), text=text,
                      valid_for=duration(sec=60, nanosec=0), source="route")
        return stamp, msg

    extra = [instruction(1.0, TEXT), instruction(1.5, "bad\x07text")]
    with bag_io.BagWriter(tmp_path / "nav") as writer:
        pending = sorted(extra, key=lambda e: e[0])
        for conn, log_time, raw in messages:
            while pending and pending[0][0] <= log_time:
                stamp, msg = pending.pop(0)
                writer.write("/" + NAVIGATION_TOPIC, bag_io.NAVIGATION_TYPE, stamp, msg)
            writer.write_raw(conn.topic, conn.msgtype, log_time, raw)
    return summary


def _replay(tmp_path, summary, family):
    values = parameters(summary)
    model = RecordingModel()
    inference = replay_engine.inference_options(values)
    description = ModelDescription("", model.model_id, "cpu", "float32", inference,
                                   family=family)
    replay = replay_engine.BagReplay(job(tmp_path / "nav", values), model, description)
    result, _ = replay.run()
    return replay, result, model


def test_a_navigation_family_gets_the_bags_instructions(tmp_path):
    summary = _bag_with_navigation(tmp_path)
    replay, result, model = _replay(tmp_path, summary, ALPAMAYO_1_5)
    assert result["status"] == "ok", result["error"]
    assert result["topics"]["navigation"] == "/" + NAVIGATION_TOPIC
    assert result["counts"]["navigation"] == 2
    assert any("control characters" in reason for reason in result["rejections"])
    used = [r for r in replay.results if r.navigation_text == TEXT]
    assert used and all(r.navigation_status == "used" for r in used)
    assert TEXT in model.texts
    # The output bag's PlannerOutput carries the text the model saw, as the node's does.
    write_plan_bag(tmp_path / "out", replay.results, replay.output_context(), replay.values)
    with bag_io.BagReader(tmp_path / "out") as reader:
        texts = [m.msg.navigation_text for m in reader.messages([PLAN_TOPIC])]
    assert TEXT in texts


def test_a_family_without_navigation_ignores_the_topic(tmp_path):
    summary = _bag_with_navigation(tmp_path)
    replay, result, model = _replay(tmp_path, summary, R1)
    assert result["status"] == "ok", result["error"]
    assert "navigation" not in result["topics"] and result["counts"]["navigation"] == 0
    assert set(model.texts) == {None}
