"""Running bag replays as jobs: one bag with its output bag and plot (`run_bag_job`), and
several bags in order or in parallel worker processes (`run_jobs`).

A job never raises for bag or parameter problems: they come back as status "error", so
one bad bag of a fleet does not stop the others.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from alpamayo_ros.core.errors import AlpamayoError
from alpamayo_ros.core.types import ModelDescription, PlannerModel
from alpamayo_ros.replay.engine import BagJob, BagReplay, ReplayOptions


def run_bag_job(job: BagJob, model: PlannerModel | None = None,
                description: ModelDescription | None = None) -> dict:
    """Replay one bag and write its output bag / plot; picklable entry point for workers.

    model/description: an already loaded model (e.g. a Ray actor's); None loads the one
    the parameters name (cached per process).
    Returns {"result": deterministic part, "timings": wall-clock part}.
    """
    try:
        replay = BagReplay(job, model, description)
    except (AlpamayoError, OSError) as exc:
        return {"result": {"bag": job.bag, "status": "error", "error": str(exc), "ticks": []},
                "timings": {"bag": job.bag, "wall_s": 0.0, "ticks": []}}
    result, timings = replay.run()
    if job.output_bag:
        from alpamayo_ros.replay.outputs import write_plan_bag
        try:
            write_plan_bag(job.output_bag, replay.results, replay.output_context(),
                           job.values, job.output_storage, job.options.namespace)
            result["output_bag"] = Path(job.output_bag).name
        except (AlpamayoError, OSError) as exc:
            result["status"] = "error"
            result["error"] = (result["error"] + "; " if result["error"] else "") + \
                f"cannot write output bag: {exc}"
    if job.plot:
        from alpamayo_ros.replay.outputs import plot_bag
        plot_bag(job.plot, result, replay.results,
                 odometry_paths=[np.asarray(e.odo_xyz, dtype=np.float64).reshape(-1, 3)
                                 for e in replay.epochs])
        if "nav_compare" in result:
            from alpamayo_ros.replay.navigation import plot_compare
            plot = Path(job.plot)
            plot_compare(plot.with_name(plot.stem + "_nav_compare.png"), result,
                         replay.nav_selected)
    return {"result": result, "timings": timings}


def run_jobs(jobs: Sequence[BagJob], n_workers: int = 1, progress: bool = False) -> list[dict]:
    """Run bag jobs in order (n_workers == 1) or in spawned worker processes.

    Results come back in the order of `jobs`, whatever order the workers finish in.
    """
    if n_workers <= 1 or len(jobs) <= 1:
        return [run_bag_job(j) for j in jobs]
    import multiprocessing
    ctx = multiprocessing.get_context("spawn")  # no fork: torch/rclpy threads are not fork-safe
    with ctx.Pool(processes=min(n_workers, len(jobs))) as pool:
        results = pool.imap(run_bag_job, jobs)  # imap keeps the input order
        if progress:
            from tqdm import tqdm
            results = tqdm(results, total=len(jobs), unit="bag", disable=None)
        return list(results)


def make_jobs(bags: Sequence[Path], values: dict, options: ReplayOptions, output_dir: Path,
              write_bag: bool = True, write_plot: bool = True, storage: str = "mcap"
              ) -> list[BagJob]:
    """One job per bag; outputs named <index>_<bag name>_plan / .png under output_dir."""
    jobs = []
    for i, bag in enumerate(bags):
        stem = f"{i:02d}_{Path(bag).name}"
        jobs.append(BagJob(
            bag=str(bag), values=values, options=options,
            output_bag=str(output_dir / f"{stem}_plan") if write_bag else None,
            output_storage=storage,
            plot=str(output_dir / f"{stem}.png") if write_plot else None))
    return jobs
