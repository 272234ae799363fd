"""Builds the PlannerModel named by the `model.*` parameters.

The planner node and the replay tool both call this, so the two can never choose or
configure a model differently. torch is imported only when the "alpamayo" backend is
chosen (inside alpamayo_ros.model.runtime); the dry-run backend is numpy only.
"""
from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Mapping

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.planner_params import BACKENDS_BY_NAME, MODEL_BACKENDS
from alpamayo_ros.core.types import InferenceOptions, ModelDescription, PlannerModel


def load_model(values: Mapping[str, Any], options: InferenceOptions
               ) -> tuple[PlannerModel, ModelDescription]:
    """(model, description) for validated `model.*` parameter values, by the loader that
    core.planner_params.MODEL_BACKEND_TABLE names for model.backend.

    values: flat parameter dict with camera_indices (checked against the checkpoint's
        family: core.model_family.check_camera_rig), model.backend, model.checkpoint_dir,
        model.processor_dir, model.device, model.dtype ("auto" or a dtype name) and
        model.fast_path (True: the fast inference path, with CUDA graphs on CUDA; False:
        the eager reference path).
    Raises ConfigError (CheckpointError included) for an unknown backend or a missing or
    mismatching checkpoint; other runtime errors (e.g. CUDA missing) propagate.
    """
    backend = BACKENDS_BY_NAME.get(values["model.backend"])
    if backend is None:
        raise ConfigError(f"model.backend: have {values['model.backend']!r}, need one of "
                          f"{', '.join(MODEL_BACKENDS)}")
    module, _, function = backend.loader.partition(":")
    return getattr(importlib.import_module(module), function)(values, options)


def load_constant_velocity(values: Mapping[str, Any], options: InferenceOptions
                           ) -> tuple[PlannerModel, ModelDescription]:
    """The numpy kinematic stand-in (no torch)."""
    from alpamayo_ros.core.kinematic_model import ConstantVelocityModel
    model = ConstantVelocityModel()
    return model, ModelDescription(checkpoint="", model_id=model.model_id, device="cpu",
                                   dtype="float64", options=options)


def load_alpamayo(values: Mapping[str, Any], options: InferenceOptions
                  ) -> tuple[PlannerModel, ModelDescription]:
    """The Alpamayo runtime from model.checkpoint_dir (torch is imported here)."""
    checkpoint = Path(values["model.checkpoint_dir"]).expanduser()
    if not checkpoint.is_dir():
        raise ConfigError(f"model.checkpoint_dir: have {str(checkpoint)!r}, need an existing "
                          "directory holding config.json and the safetensors weights")
    # The camera rig must fit the checkpoint's family; refused before any weight is read.
    from alpamayo_ros.core.model_family import check_camera_rig
    from alpamayo_ros.model.checkpoint import checkpoint_family, read_checkpoint_config
    if "camera_indices" in values:
        check_camera_rig(checkpoint_family(read_checkpoint_config(checkpoint)),
                         values["camera_indices"])
    from alpamayo_ros.model.runtime import AlpamayoRuntime
    runtime = AlpamayoRuntime.from_pretrained(
        str(checkpoint), processor_dir=values["model.processor_dir"] or None,
        device=values["model.device"], dtype=values["model.dtype"],
        fast_path=bool(values["model.fast_path"]))
    info = runtime.describe()
    description = ModelDescription(
        checkpoint=f"{checkpoint.resolve()} ({runtime.model_id})", model_id=runtime.model_id,
        device=str(info["device"]), dtype=str(info["dtype"]), options=options,
        family=str(info["family"]))
    return runtime, description
