"""Fleet replay on Ray: a pool of actors that load the model once (skips without ray).

The model is the real code on a tiny random checkpoint, so "loaded once per actor" is about
a real load; bags are short so the test stays light on 2 cores.
"""
import os
from types import SimpleNamespace

import pytest

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.kinematic_model import ConstantVelocityModel
from alpamayo_ros.replay import engine as replay_engine, jobs as replay_jobs, report as replay_report
from scenario_bags import job, parameters, write_bag

pytest.importorskip("torch")
ray_replay = pytest.importorskip("alpamayo_ros.tools.ray_replay")

# The first bag is the longest, so with two actors the bags finish out of input order.
BAGS = (("a_curved", "curved_drive", 5.0), ("b_circle", "circle_8mps", 3.0),
        ("c_straight", "straight_constant", 3.0), ("d_start", "standing_start", 3.0))


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Four scenario bags and the tiny-model parameters shared by their jobs."""
    from alpamayo_ros.model.tiny_checkpoint import write_tiny_checkpoint

    root = tmp_path_factory.mktemp("fleet")
    checkpoint = write_tiny_checkpoint(root / "model", seed=0)
    extra = {"model.backend": "alpamayo", "model.checkpoint_dir": str(checkpoint),
             "model.device": "cpu", "model.dtype": "float32", "model.max_coc_tokens": 8,
             "model.num_samples": 2, "model.seed": 0}
    jobs = []
    for name, preset, duration in BAGS:
        summary = write_bag(root / name, preset, duration_s=duration)
        jobs.append(job(root / name, parameters(summary, rate_hz=1.0, extra=extra)))
    assert all(j.values == jobs[0].values for j in jobs)  # one model for the whole fleet
    return jobs


def _report(jobs, outcomes):
    report = replay_report.build_report(jobs[0].values, jobs[0].options, outcomes)
    return replay_report.report_json(replay_report.without_timings(report))


def test_worker_loads_the_model_once_and_replays_like_run_bag_job(fleet, monkeypatch):
    """In-process: the actor body calls the loader once for all bags, and each outcome is
    exactly run_bag_job's."""
    loads = []
    real_load = replay_engine.load_model
    monkeypatch.setattr(replay_engine, "_MODEL_CACHE", {})  # a fresh process's empty cache
    monkeypatch.setattr(replay_engine, "load_model",
                        lambda values: loads.append(1) or real_load(values))
    worker = ray_replay.ReplayWorker(index=0)
    outcomes = [worker.replay(j) for j in fleet[:3]]
    assert len(loads) == 1 and worker.model_loads == 1
    assert [o["timings"]["worker"]["bags_replayed"] for o in outcomes] == [1, 2, 3]
    assert all(o["timings"]["worker"]["model_loads"] == 1 for o in outcomes)
    assert _report(fleet[:3], outcomes) == _report(fleet[:3], replay_jobs.run_jobs(fleet[:3], 1))


def test_run_bag_job_uses_the_model_it_is_given(fleet, monkeypatch):
    calls = []

    class Counting(ConstantVelocityModel):
        def predict(self, *args, **kwargs):
            calls.append(1)
            return super().predict(*args, **kwargs)

    def no_loading(values):
        raise AssertionError("run_bag_job loaded a model although it was given one")

    monkeypatch.setattr(replay_engine, "load_model", no_loading)
    outcome = replay_jobs.run_bag_job(fleet[1], model=Counting())
    planned = [t for t in outcome["result"]["ticks"] if t["status"] != "SKIPPED"]
    assert outcome["result"]["status"] == "ok" and planned
    assert len(calls) == len(planned)


def test_two_actors_four_bags_give_the_jobs_1_report_with_one_load_per_actor(fleet):
    ray = pytest.importorskip("ray", reason="ray not installed (pip install -r "
                                            "requirements-ray.txt)")
    local = replay_jobs.run_jobs(fleet, 1)
    remote = ray_replay.run_jobs_on_ray(
        fleet, num_actors=2, init_kwargs={"num_cpus": 2, "include_dashboard": False})
    assert [o["result"]["bag"] for o in remote] == [j.bag for j in fleet]
    assert all(o["result"]["status"] == "ok" for o in remote)
    assert any(t["candidates"] for o in remote for t in o["result"]["ticks"])
    assert _report(fleet, remote) == _report(fleet, local)

    workers = [o["timings"]["worker"] for o in remote]
    pids = {w["pid"] for w in workers}
    assert len(pids) == 2 and os.getpid() not in pids  # two actor processes replayed
    for pid in pids:
        mine = [w for w in workers if w["pid"] == pid]
        # Each actor loaded the model once, before its first bag, and kept it for the rest.
        assert all(w["model_loads"] == 1 for w in mine)
        assert sorted(w["bags_replayed"] for w in mine) == list(range(1, len(mine) + 1))
    assert not ray.is_initialized()  # the instance started for the call was shut down


def test_default_actor_count_follows_the_cluster_resources():
    fake = SimpleNamespace(cluster_resources=lambda: {"CPU": 16.0, "GPU": 2.0})
    assert ray_replay.default_num_actors(fake, 10, num_cpus=4, num_gpus=1) == 2
    assert ray_replay.default_num_actors(fake, 10, num_cpus=4, num_gpus=0) == 4
    assert ray_replay.default_num_actors(fake, 3, num_cpus=1, num_gpus=0) == 3
    no_gpu = SimpleNamespace(cluster_resources=lambda: {"CPU": 16.0})
    with pytest.raises(ConfigError, match="has 0 GPU.*need 1 per replay worker"):
        ray_replay.default_num_actors(no_gpu, 4, num_cpus=1, num_gpus=1)
    with pytest.raises(ConfigError, match="have 0, need >= 1"):
        ray_replay.run_jobs_on_ray([replay_engine.BagJob(bag="x", values={})], num_actors=0)


def test_cli_options(tmp_path):
    args = ray_replay.build_arg_parser().parse_args(
        ["bag", "--params", "p.yaml", "-o", str(tmp_path), "--ray-actors", "2",
         "--ray-gpus-per-actor", "1", "--ray-cpus-per-task", "4"])
    assert (args.ray_actors, args.ray_gpus, args.ray_cpus) == (2, 1.0, 4.0)
    assert args.ray_address is None and not args.ray_ship_code
