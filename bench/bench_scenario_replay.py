"""Synthetic scenario rendering and stepped replay throughput.

Reported:
  render     median / p90 time of Scenario.render_camera per frame, per camera [ms]
             (target: < 5 ms for 576x320)
  bag write  seconds to write a scenario bag (4 cameras + 50 Hz odometry) and its size
  replay     replay speed with the constant-velocity backend: ticks per wall second and
             bag seconds per wall second (the model excluded, this is the tool's overhead)

Run: cd /work/main && OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/bench_scenario_replay.py
     [--width 576 --height 320] [--duration 20] [--rate 10]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

from alpamayo_ros.core import parameter_file
from alpamayo_ros.tools import make_bag, replay
from alpamayo_ros.replay import engine as replay_engine, jobs as replay_jobs
from alpamayo_ros.sim.scenario import curved_drive, default_cameras


def bench_render(width: int, height: int, frames: int = 100) -> None:
    scenario = curved_drive(cameras=default_cameras(10.0, width, height))
    for index in (0, 1, 2, 6):
        scenario.render_camera(index, 0.0)  # builds the per-camera ray cache
        times = []
        for k in range(frames):
            start = time.perf_counter()
            scenario.render_camera(index, 0.05 * k)
            times.append(time.perf_counter() - start)
        t = np.asarray(times) * 1e3
        print(f"render cam {index} {width}x{height}: median {np.median(t):.2f} ms, "
              f"p90 {np.percentile(t, 90):.2f} ms")


def bench_replay(width: int, height: int, duration: float, rate_hz: float) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench_replay_"))
    try:
        scenario = curved_drive(duration_s=duration,
                                cameras=default_cameras(10.0, width, height))
        start = time.perf_counter()
        summary = make_bag.write_scenario_bag(work / "bag", scenario)
        write_s = time.perf_counter() - start
        size_mb = sum(f.stat().st_size for f in (work / "bag").iterdir()) / 1e6
        print(f"bag write: {duration:g} s scenario in {write_s:.2f} s ({size_mb:.1f} MB)")
        nested = make_bag.planner_parameters_for(summary, rate_hz=rate_hz)
        section = nested["alpamayo_planner"]["ros__parameters"]
        values = replay.resolve_parameters(parameter_file.flatten_parameters(section))
        start = time.perf_counter()
        out = replay_jobs.run_bag_job(replay_engine.BagJob(bag=str(work / "bag"), values=values))
        wall = time.perf_counter() - start
        ticks = len(out["result"]["ticks"])
        print(f"replay: {ticks} ticks in {wall:.2f} s = {ticks / wall:.1f} ticks/s, "
              f"{duration / wall:.1f} bag s per wall s (constant-velocity backend)")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--width", type=int, default=576)
    p.add_argument("--height", type=int, default=320)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--rate", type=float, default=10.0)
    args = p.parse_args()
    bench_render(args.width, args.height)
    bench_replay(args.width, args.height, args.duration, args.rate)


if __name__ == "__main__":
    main()
