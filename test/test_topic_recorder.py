"""TopicRecorder (the closed-loop simulator's bag): followed topics whose publisher
appears after the simulation started are still recorded."""
import pytest

rclpy = pytest.importorskip("rclpy")
from std_msgs.msg import String  # noqa: E402

from alpamayo_ros.testbed.topic_recorder import TopicRecorder  # noqa: E402
from alpamayo_ros.bag import bag_io  # noqa: E402

pytestmark = pytest.mark.ros
TIMEOUT_S = 10.0


def test_a_publisher_announced_after_the_start_is_recorded_from_then_on(ros_node, tmp_path):
    node = ros_node.node
    # mcap: the sqlite3 writer may only be used by the thread that opened it, and the
    # test's node spins in another thread than this one.
    recorder = TopicRecorder(node, tmp_path / "bag", "mcap", ["/late", "/never"],
                             clock_ns=lambda: 1_000)
    assert recorder.all_matched()  # no publisher on either topic yet: nothing to wait for
    # As in the simulator: discover_missing() runs on every step, here a 20 Hz timer.
    step = node.create_timer(0.05, recorder.discover_missing)
    publisher = node.create_publisher(String, "/late", 10)
    ros_node.wait_for_publisher_match(publisher)
    publisher.publish(String(data="after the start"))
    ros_node.wait_until(lambda: recorder.counts.get("/late", 0) == 1, TIMEOUT_S,
                        "the message on /late in the bag")
    node.destroy_timer(step)
    assert recorder.all_matched()
    recorder.close()
    with bag_io.BagReader(tmp_path / "bag") as reader:
        messages = list(reader.messages(["/late"]))
    assert len(messages) == 1 and messages[0].log_time_ns == 1_000

