"""The node's model: `model.*` parameters -> (PlannerModel, ModelDescription).

A thin wrapper so the node stays free of backend branches; the choice itself lives in
alpamayo_ros.model.backends, shared with the replay tool.
"""
from __future__ import annotations

from typing import Any, Mapping

from alpamayo_ros.core.planner_params import inference_options
from alpamayo_ros.core.types import ModelDescription, PlannerModel
from alpamayo_ros.model.backends import load_model as load_backend


def load_model(values: Mapping[str, Any]) -> tuple[PlannerModel, ModelDescription]:
    """(model, description) for validated node parameters (see model.backends)."""
    return load_backend(values, inference_options(values))
