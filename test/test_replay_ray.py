"""The replay's per-bag job as Ray tasks on a local Ray instance (skips without ray)."""
import json

import pytest

from alpamayo_ros.tools import replay_jobs
from scenario_bags import job, parameters, write_bag

ray = pytest.importorskip("ray", reason="ray not installed (pip install -r requirements-ray.txt)")


def test_ray_tasks_give_the_same_results_in_bag_order(tmp_path):
    from alpamayo_ros.tools.ray_replay import run_jobs_on_ray
    jobs = []
    for name, preset in (("b_circle", "circle_8mps"), ("a_straight", "straight_constant")):
        summary = write_bag(tmp_path / name, preset, duration_s=4.0)
        jobs.append(job(tmp_path / name, parameters(summary)))
    local = replay_jobs.run_jobs(jobs, 1)
    remote = run_jobs_on_ray(jobs, init_kwargs={"num_cpus": 1, "include_dashboard": False})
    assert [o["result"]["bag"] for o in remote] == [j.bag for j in jobs]
    assert json.dumps([o["result"] for o in remote]) == json.dumps([o["result"] for o in local])
    assert not ray.is_initialized()  # the instance started for the call was shut down
