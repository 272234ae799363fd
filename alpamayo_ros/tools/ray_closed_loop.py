"""Route suites on a pool of Ray actors (``alpamayo-closed-loop --suite DIR --ray``;
optional: ``pip install -r requirements-ray.txt``).

The engine of the fleet replay (tools/ray_replay.py): one long-lived actor per slot,
``ray.util.ActorPool.map`` hands the next route to whichever actor is free, results come
back in the order of the routes. Each actor holds its own ROS domain (--domain-ids, as
the local --jobs workers) and a planner process (closed_loop.PlannerHost: the model is
loaded once per actor, for all its routes), and runs exactly
`closed_loop_suite.run_route_job`, so a route gives the same report in this process, in
--jobs workers and on a cluster.

Paths (the suite folder, OUT) must be visible to the actors (shared storage), and the
package must be installed where they run.
"""
from __future__ import annotations

import os
import signal
from typing import Optional, Sequence

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.tools.closed_loop_suite import (RouteJob, default_domain_ids,
                                                  planner_host_for, run_route_job)
from alpamayo_ros.tools.ray_replay import _import_ray


class RouteWorker:
    """Body of one Ray actor: runs the routes sent to it on its ROS domain."""

    def __init__(self, index: int, domain_id: int) -> None:
        self.index = index
        self.domain_id = domain_id
        self.routes_run = 0
        self.host = None

    def run(self, job: RouteJob) -> dict:
        # Ray blocks SIGINT in its worker threads, and children inherit the signal mask:
        # unblock it, or the route's nodes could not be stopped with SIGINT.
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        if self.host is None:
            self.host = planner_host_for(job, f"actor{self.index}")
        result = run_route_job(job, self.domain_id, self.host)
        self.routes_run += 1
        result["worker"] = {"index": self.index, "pid": os.getpid(),
                            "domain_id": self.domain_id, "routes_run": self.routes_run}
        return result

    def close(self) -> None:
        """Stop the planner process (before the actor is killed)."""
        if self.host is not None:
            self.host.close()


def run_routes_on_ray(jobs: Sequence[RouteJob], domain_ids: Sequence[int], *,
                      address: Optional[str] = None, num_actors: Optional[int] = None,
                      num_cpus: float = 1.0, init_kwargs: Optional[dict] = None) -> list:
    """Run the route jobs on a pool of RouteWorker actors; results in job order.

    Starts (and afterwards shuts down) a Ray instance unless one is already initialised;
    num_actors defaults to the number of domain ids (at most one per route)."""
    if not jobs:
        return []
    count = min(num_actors or len(domain_ids), len(jobs))
    if count < 1 or len(domain_ids) < count:
        raise ConfigError(f"Ray actors: have {count} actors and {len(domain_ids)} ROS "
                          "domain ids, need >= 1 actor and one domain id per actor")
    ray = _import_ray()
    from ray.util import ActorPool

    started_here = False
    if not ray.is_initialized():
        ray.init(address=address, **(init_kwargs or {}))
        started_here = True
    actors = []
    try:
        worker_class = ray.remote(num_cpus=num_cpus)(RouteWorker)
        actors = [worker_class.remote(i, domain_ids[i]) for i in range(count)]
        pool = ActorPool(actors)
        results = list(pool.map(lambda actor, job: actor.run.remote(job), jobs))
        ray.get([actor.close.remote() for actor in actors])
        return results
    finally:
        for actor in actors:
            ray.kill(actor)
        if started_here:
            ray.shutdown()


def runner_from_args(args):
    """The --ray runner of a parsed alpamayo-closed-loop command line."""
    actors = args.ray_actors or args.jobs
    domains = args.domain_ids or default_domain_ids(actors)

    def runner(jobs):
        return run_routes_on_ray(jobs, domains, address=args.ray_address, num_actors=actors,
                                 init_kwargs={"include_dashboard": False}
                                 if args.ray_address is None else None)
    return runner
