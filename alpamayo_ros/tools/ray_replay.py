"""Run the replay's per-bag jobs as Ray tasks (optional; ``pip install -r requirements-ray.txt``).

The task is exactly `replay_jobs.run_bag_job` (the function the local ``--jobs`` workers run),
so a bag gives the same report on a laptop, in worker processes and on a cluster. Results
come back in the order of the bags (``ray.get`` on the list of task references).

Command (same arguments as ``alpamayo-replay`` plus the Ray ones):

    python -m alpamayo_ros.tools.ray_replay BAG [BAG ...] --params P.yaml -o OUT \\
        --ray-address auto --ray-cpus-per-task 4 [--ray-gpus-per-task 1] [--ray-ship-code]

``--ray-address auto`` joins a running cluster (``ray start --head`` / KubeRay); without it a
local Ray instance is started. Bag paths and output paths must be visible to the workers
(shared storage) and the workers need this package importable: install it on the cluster
image or pass ``--ray-ship-code`` to upload the source tree as a runtime_env py_module.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.tools import replay, replay_engine, replay_jobs

INSTALL_HINT = "pip install -r requirements-ray.txt"


def _import_ray():
    try:
        import ray
    except ImportError as exc:
        raise ConfigError(f"Ray is not installed ({exc}); {INSTALL_HINT}") from exc
    return ray


def run_jobs_on_ray(jobs: Sequence[replay_engine.BagJob], *, address: Optional[str] = None,
                    num_cpus: float = 1.0, num_gpus: float = 0.0, ship_code: bool = False,
                    init_kwargs: Optional[dict] = None) -> list:
    """Submit one Ray task per bag job; returns the outcomes in job order.

    Starts (and afterwards shuts down) a Ray instance unless one is already initialised.
    num_cpus / num_gpus: resources each task reserves (a GPU model wants num_gpus=1).
    """
    ray = _import_ray()
    started_here = False
    if not ray.is_initialized():
        kwargs = dict(init_kwargs or {})
        if ship_code:
            package_dir = Path(replay.__file__).resolve().parents[1]
            kwargs.setdefault("runtime_env", {})["py_modules"] = [str(package_dir)]
        ray.init(address=address, **kwargs)
        started_here = True
    try:
        task = ray.remote(num_cpus=num_cpus, num_gpus=num_gpus)(replay_jobs.run_bag_job)
        return ray.get([task.remote(job) for job in jobs])
    finally:
        if started_here:
            ray.shutdown()


def build_arg_parser() -> argparse.ArgumentParser:
    p = replay.build_arg_parser()
    p.prog = "python -m alpamayo_ros.tools.ray_replay"
    g = p.add_argument_group("ray")
    g.add_argument("--ray-address", default=None,
                   help="cluster address ('auto' joins a running cluster); default: local")
    g.add_argument("--ray-cpus-per-task", type=float, default=1.0)
    g.add_argument("--ray-gpus-per-task", type=float, default=0.0)
    g.add_argument("--ray-ship-code", action="store_true",
                   help="upload alpamayo_ros to the workers (runtime_env py_modules)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_arg_parser().parse_args(argv)

    def runner(jobs, parsed):
        return run_jobs_on_ray(jobs, address=parsed.ray_address,
                               num_cpus=parsed.ray_cpus_per_task,
                               num_gpus=parsed.ray_gpus_per_task,
                               ship_code=parsed.ray_ship_code,
                               init_kwargs={"include_dashboard": False}
                               if parsed.ray_address is None else None)
    return replay.run_cli(args, runner)


if __name__ == "__main__":
    sys.exit(main())
