"""Replay many bags on Ray with the model loaded once per worker (optional;
``pip install -r requirements-ray.txt``).

Design: a pool of Ray actors (``ReplayWorker``), one per GPU or CPU slot. An actor loads the
model the first time a bag needs it and keeps it for every later bag sent to it (the real
checkpoint is 22 GB: loading it per bag would cost more than replaying). Each bag runs
exactly `replay_jobs.run_bag_job` (the function the local ``--jobs`` workers run) with the
actor's model, so a bag gives the same report on a laptop, in worker processes and on a
cluster. ``ray.util.ActorPool.map`` hands the next bag to whichever actor is free and
returns the outcomes in the order of the bags.

Which worker replayed a bag, in which process, and how many model loads that worker had
made by then is added to the bag's ``timings`` (``timings.bags[i].worker``), the report
section that determinism checks leave out.

Command (same arguments as ``alpamayo-replay`` plus the Ray ones):

    python -m alpamayo_ros.tools.ray_replay BAG [BAG ...] --params P.yaml -o OUT \\
        --ray-address auto [--ray-actors N] --ray-cpus-per-actor 4 \\
        [--ray-gpus-per-actor 1] [--ray-ship-code]

``--ray-address auto`` joins a running cluster (``ray start --head`` / KubeRay); without it a
local Ray instance is started. The default number of actors is what the cluster's GPUs
(with ``--ray-gpus-per-actor``) or CPUs allow, at most one per bag. Ray gives each GPU
actor its own ``CUDA_VISIBLE_DEVICES``, so ``model.device: cuda`` is that actor's GPU. Bag
paths and output paths must be visible to the workers (shared storage) and the workers need
this package importable: install it on the cluster image or pass ``--ray-ship-code`` to
upload the source tree as a runtime_env py_module.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Optional, Sequence

from alpamayo_ros.core.errors import AlpamayoError, ConfigError
from alpamayo_ros.tools import replay
from alpamayo_ros.replay import engine as replay_engine, jobs as replay_jobs

INSTALL_HINT = "pip install -r requirements-ray.txt"


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"Ray is not installed ({exc}); {INSTALL_HINT}") from exc
    return ray


class ReplayWorker:
    """Body of one Ray actor: replays the bags sent to it with models it loaded once.

    Models are kept per `replay_engine.model_key` (all bags of one command share one), so
    ``model_loads`` counts the loads this worker process made.
    """

    def __init__(self, index: int) -> None:
        self.index = index
        self.model_loads = 0
        self.bags_replayed = 0
        self._models: dict[tuple, Any] = {}

    def replay(self, job: replay_engine.BagJob) -> dict:
        """`replay_jobs.run_bag_job(job)` with this worker's model; adds
        ``timings.worker``."""
        key = replay_engine.model_key(job.values)
        if key not in self._models:
            try:
                self._models[key] = replay_engine.load_model(job.values)
            except (AlpamayoError, OSError):
                # Not loadable: run_bag_job reports it as the bag's error, as --jobs does.
                return self._tag(replay_jobs.run_bag_job(job))
            self.model_loads += 1
        model, description = self._models[key]
        return self._tag(replay_jobs.run_bag_job(job, model, description))

    def _tag(self, outcome: dict) -> dict:
        self.bags_replayed += 1
        outcome["timings"]["worker"] = {"index": self.index, "pid": os.getpid(),
                                        "model_loads": self.model_loads,
                                        "bags_replayed": self.bags_replayed}
        return outcome


def default_num_actors(ray, num_jobs: int, num_cpus: float, num_gpus: float) -> int:
    """As many actors as the cluster's GPUs (num_gpus > 0) or CPUs hold, at most num_jobs.

    ConfigError when not even one fits (e.g. GPUs asked for on a cluster without any): Ray
    would otherwise wait for the resources forever.
    """
    resources = ray.cluster_resources()
    if num_gpus > 0:
        have, need, what = float(resources.get("GPU", 0.0)), num_gpus, "GPU"
    else:
        have, need, what = float(resources.get("CPU", 0.0)), num_cpus, "CPU"
    fits = int(have // need) if need > 0 else num_jobs
    if fits < 1:
        raise ConfigError(f"Ray cluster has {have:g} {what}(s), need {need:g} per replay "
                          f"worker (--ray-{what.lower()}s-per-actor)")
    return max(1, min(fits, num_jobs))


def run_jobs_on_ray(jobs: Sequence[replay_engine.BagJob], *, address: Optional[str] = None,
                    num_actors: Optional[int] = None, num_cpus: float = 1.0,
                    num_gpus: float = 0.0, ship_code: bool = False,
                    init_kwargs: Optional[dict] = None) -> list:
    """Replay the bag jobs on a pool of ReplayWorker actors; outcomes in job order.

    Starts (and afterwards shuts down) a Ray instance unless one is already initialised.
    num_actors: workers (default: `default_num_actors`); num_cpus / num_gpus: resources
    each actor holds for its lifetime (a GPU model wants num_gpus=1).
    """
    if not jobs:
        return []
    if num_actors is not None and num_actors < 1:
        raise ConfigError(f"number of Ray actors: have {num_actors}, need >= 1")
    ray = _import_ray()
    from ray.util import ActorPool

    started_here = False
    if not ray.is_initialized():
        kwargs = dict(init_kwargs or {})
        if ship_code:
            package_dir = Path(replay.__file__).resolve().parents[1]
            kwargs.setdefault("runtime_env", {})["py_modules"] = [str(package_dir)]
        ray.init(address=address, **kwargs)
        started_here = True
    actors = []
    try:
        count = num_actors or default_num_actors(ray, len(jobs), num_cpus, num_gpus)
        worker_class = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(ReplayWorker)
        actors = [worker_class.remote(i) for i in range(min(count, len(jobs)))]
        pool = ActorPool(actors)
        return list(pool.map(lambda actor, job: actor.replay.remote(job), jobs))
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_here:
            ray.shutdown()


def build_arg_parser() -> argparse.ArgumentParser:
    p = replay.build_arg_parser()
    p.prog = "python -m alpamayo_ros.tools.ray_replay"
    g = p.add_argument_group("ray")
    g.add_argument("--ray-address", default=None,
                   help="cluster address ('auto' joins a running cluster); default: local")
    g.add_argument("--ray-actors", type=int, default=None,
                   help="replay workers, each loading the model once (default: as many as "
                        "the cluster's GPUs or CPUs hold, at most one per bag)")
    g.add_argument("--ray-cpus-per-actor", "--ray-cpus-per-task", dest="ray_cpus",
                   type=float, default=1.0, help="CPUs each worker holds")
    g.add_argument("--ray-gpus-per-actor", "--ray-gpus-per-task", dest="ray_gpus",
                   type=float, default=0.0, help="GPUs each worker holds")
    g.add_argument("--ray-ship-code", action="store_true",
                   help="upload alpamayo_ros to the workers (runtime_env py_modules)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_arg_parser().parse_args(argv)

    def runner(jobs, parsed):
        return run_jobs_on_ray(jobs, address=parsed.ray_address, num_actors=parsed.ray_actors,
                               num_cpus=parsed.ray_cpus, num_gpus=parsed.ray_gpus,
                               ship_code=parsed.ray_ship_code,
                               init_kwargs={"include_dashboard": False}
                               if parsed.ray_address is None else None)
    return replay.run_cli(args, runner)


if __name__ == "__main__":
    sys.exit(main())
