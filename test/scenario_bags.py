"""Helpers of the replay / bag tests: small scenario bags and matching parameters."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from alpamayo_ros.core import parameter_file
from alpamayo_ros.tools import make_bag, replay
from alpamayo_ros.replay import engine as replay_engine
from alpamayo_ros.sim.scenario import default_cameras, make_preset

# Small frames keep the bags tiny and the tests fast on 2 cores.
WIDTH, HEIGHT = 64, 48


def write_bag(path: Path, preset: str = "straight_constant", duration_s: float = 9.0,
              storage: str = "mcap", encoding: str = "rgb8", camera_rate: float = 10.0,
              faults: make_bag.BagFaults = make_bag.BagFaults(),
              layout: make_bag.BagLayout = make_bag.BagLayout(), **preset_kwargs
              ) -> make_bag.BagSummary:
    scenario = make_preset(preset, duration_s=duration_s,
                           cameras=default_cameras(camera_rate, WIDTH, HEIGHT, encoding),
                           **preset_kwargs)
    return make_bag.write_scenario_bag(path, scenario, storage, layout, faults)


def parameters(summary: make_bag.BagSummary, rate_hz: float = 2.0,
               extra: Optional[dict] = None) -> dict:
    """Validated flat node parameters for the bag (constant-velocity backend)."""
    nested = make_bag.planner_parameters_for(summary, rate_hz=rate_hz, extra=extra)
    flat = parameter_file.flatten_parameters(nested["alpamayo_planner"]["ros__parameters"])
    return replay.resolve_parameters(flat)


def job(bag: Path, values: dict, **kwargs) -> replay_engine.BagJob:
    return replay_engine.BagJob(bag=str(bag), values=values, **kwargs)
