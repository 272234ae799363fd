#!/usr/bin/env python3
"""Test helper: planner_node whose model call also sleeps ALPAMAYO_TEST_INFERENCE_DELAY_S wall
seconds (default 1.2), to run the same planner at another inference speed."""
import os
import sys
import time

from rclpy.executors import SingleThreadedExecutor

from alpamayo_ros.ros import planner_node
from alpamayo_ros.ros.model_loader import load_model
from alpamayo_ros.ros.spin import run_node

DELAY_S = float(os.environ.get("ALPAMAYO_TEST_INFERENCE_DELAY_S", "1.2"))


class SlowModel:
    def __init__(self, model):
        self._model = model
        self.model_id = model.model_id

    def predict(self, *args, **kwargs):
        time.sleep(DELAY_S)  # the point of this helper: a slower model, same outputs
        return self._model.predict(*args, **kwargs)


def slow_loader(values):
    model, description = load_model(values)
    return SlowModel(model), description


if __name__ == "__main__":
    sys.exit(run_node(planner_node.NODE_NAME,
                      lambda: planner_node.PlannerNode(model_loader=slow_loader),
                      SingleThreadedExecutor, None))
