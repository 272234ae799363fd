"""Demo: the planner with the real model code on a tiny random checkpoint, on the CPU, fed by
the synthetic sensor publisher; prints every plan and draws a top-down PNG.

    python -m alpamayo_ros.ros.demo [--seconds 8] [--output-dir demo_output]

Steps: write a tiny checkpoint to the cache dir if missing; start `planner_node` and
`synthetic_sensors` as processes on a private ROS domain (sim time: the sensor node
publishes /clock); print t0, v0, first and last waypoints, CoC and latency of each plan;
write <output-dir>/demo_topdown.png (history and candidate paths in the odometry frame).
Exit 0 with a summary, 1 when no plan arrived (with the planner's log tail).
The tiny checkpoint has random weights: the trajectories and CoC text are plumbing, not
driving (its CoC is random tokens).
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from alpamayo_ros.core.config import DEFAULT_ODOMETRY_TOPIC
from alpamayo_ros.core.outputs import PLAN_TOPIC
from alpamayo_ros.core.types import NS_PER_S

PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def default_cache_dir(family: str = "r1") -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    name = "tiny_checkpoint_seed0" if family == "r1" else "tiny_checkpoint_1_5_seed0"
    return Path(base) / "alpamayo_ros" / name


def ensure_tiny_checkpoint(root: Path, seed: int = 0, family: str = "r1") -> Path:
    """root/checkpoint (+ root/base_vlm) of the family ("r1" or "1.5"), written once (again
    when root holds another family's); returns the checkpoint directory."""
    import json

    from alpamayo_ros.model.tiny_checkpoint import FAMILY_NAMES, write_tiny_checkpoint

    checkpoint = root / "checkpoint"
    try:
        written = json.loads((checkpoint / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        written = None
    if written == FAMILY_NAMES[family] and (root / "base_vlm").is_dir():
        return checkpoint
    print(f"writing a tiny random {family} checkpoint to {root} ...", flush=True)
    return write_tiny_checkpoint(root, seed=seed, overwrite=True, family=family)


def child_environment(domain_id: int, log_dir: Path) -> dict:
    """Environment of the node processes: this package first on PYTHONPATH, a private ROS
    domain, localhost discovery, logs under log_dir, one BLAS thread (the demo shares the
    CPU between the model and the renderer)."""
    env = dict(os.environ)
    paths = [str(PACKAGE_ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["ROS_DOMAIN_ID"] = str(domain_id)
    env["ROS_LOG_DIR"] = str(log_dir)
    env.setdefault("HOME", str(log_dir))
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONUNBUFFERED"] = "1"
    profile = PACKAGE_ROOT / "config" / "fastdds_large_messages.xml"
    if profile.is_file():
        env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(profile))
    return env


class NodeProcess:
    """A node run as `python -m <module> --ros-args ...` in its own process group."""

    def __init__(self, name: str, module: str, ros_args: Sequence[str], env: dict,
                 log_path: Path) -> None:
        self.name, self.log_path = name, log_path
        with open(log_path, "wb") as log:
            self.popen = subprocess.Popen([sys.executable, "-m", module, "--ros-args", *ros_args],
                                          env=env, stdin=subprocess.DEVNULL, stdout=log,
                                          stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_output(self, text: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.output():
                return True
            if self.popen.poll() is not None:
                return False
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGINT)
            try:
                self.popen.wait(10.0)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5.0)


def _param(name: str, value) -> list:
    """`-p name:=value` with value as the YAML literal rcl parses (strings quoted)."""
    if isinstance(value, bool):
        value = "true" if value else "false"
    elif isinstance(value, str):
        value = "'" + value.replace("'", "''") + "'"
    return ["-p", f"{name}:={value}"]


def describe_plan(plan) -> str:
    """One line per plan: t0 [s], status, v0, first/last waypoint, latency, CoC."""
    t0 = plan.header.stamp.sec + plan.header.stamp.nanosec / NS_PER_S
    if plan.status != 0 or not plan.candidates:
        return f"t0={t0:.3f} s  status={plan.status} ({plan.status_reason})"
    cand = plan.candidates[plan.selected_index]
    first, last = cand.poses[0].position, cand.poses[-1].position
    coc = cand.coc.replace("\n", " ")
    return (f"t0={t0:.3f} s  v0={plan.v0:5.2f} m/s  first=({first.x:6.2f}, {first.y:6.2f}) m "
            f"@+0.1 s  last=({last.x:6.2f}, {last.y:6.2f}) m @+6.4 s  "
            f"latency={plan.timing.latency:.3f} s sim, {plan.timing.latency_wall:.3f} s wall "
            f"(model {plan.timing.model_total:.3f} s)  "
            f"CoC={coc[:60]!r}")


def _pose_matrix(pose) -> np.ndarray:
    from scipy.spatial.transform import Rotation
    q, p = pose.orientation, pose.position
    T = np.eye(4)
    T[:3, :3] = Rotation.from_quat([q.x, q.y, q.z, q.w]).as_matrix()
    T[:3, 3] = [p.x, p.y, p.z]
    return T


def _in_odom(plan, poses) -> np.ndarray:
    """(N, 2) xy of t0-frame poses in the odometry frame (anchored at the t0 pose)."""
    T0 = _pose_matrix(plan.t0_pose_odom)
    pts = np.array([[p.position.x, p.position.y, p.position.z, 1.0] for p in poses])
    return (pts @ T0.T)[:, :2]


def write_topdown_png(plans, odometry_xy: np.ndarray, path: Path) -> None:
    """Top-down view in the odometry frame: driven path, per plan the history and all
    candidates (the last plan highlighted)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 8))
    if len(odometry_xy):
        ax.plot(odometry_xy[:, 0], odometry_xy[:, 1], color="0.75", lw=4, label="odometry")
    for i, plan in enumerate(plans):
        last = i == len(plans) - 1
        hist = _in_odom(plan, plan.inputs.history_poses)
        ax.plot(hist[:, 0], hist[:, 1], "k.-" if last else "k-", lw=1.5 if last else 0.5,
                label="history (16 poses)" if last else None)
        others_labelled = False
        for k, cand in enumerate(plan.candidates):
            xy = _in_odom(plan, cand.poses)
            selected = k == plan.selected_index
            label = None
            if last and (selected or not others_labelled):
                label = "selected sample" if selected else "other samples"
                others_labelled = others_labelled or not selected
            ax.plot(xy[:, 0], xy[:, 1], color=("tab:green" if selected else "tab:blue"),
                    alpha=1.0 if last else 0.25, lw=2 if last and selected else 1,
                    label=label)
    ax.set_aspect("equal")
    ax.set_xlabel("x [m] (odom)")
    ax.set_ylabel("y [m] (odom)")
    ax.set_title(f"alpamayo_ros demo: {len(plans)} plans (tiny random model)")
    ax.legend(loc="best")
    ax.grid(True, alpha=0.3)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def run_demo(args: argparse.Namespace) -> int:
    output_dir = Path(args.output_dir).resolve()
    log_dir = output_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    params = {"use_sim_time": True, "rate_hz": args.rate_hz, "model.backend": args.backend,
              "model.device": "cpu", "model.num_samples": args.num_samples,
              "model.max_coc_tokens": args.max_coc_tokens, "model.seed": args.seed}
    if args.backend == "alpamayo":
        cache_dir = Path(args.cache_dir or default_cache_dir(args.family))
        params["model.checkpoint_dir"] = str(ensure_tiny_checkpoint(cache_dir,
                                                                    family=args.family))
    domain_id = args.domain_id if args.domain_id is not None else 1 + os.getpid() % 100
    env = child_environment(domain_id, log_dir)
    os.environ.update({k: env[k] for k in ("ROS_DOMAIN_ID", "ROS_LOG_DIR",
                                           "ROS_AUTOMATIC_DISCOVERY_RANGE")})
    os.environ.setdefault("HOME", str(log_dir))
    planner_args = ["--params-file", str(PACKAGE_ROOT / "config" / "planner.yaml")]
    for name, value in params.items():
        planner_args += _param(name, value)
    sensor_args = (_param("publish_clock", True) + _param("duration", args.seconds + 30.0)
                   + _param("scenario", args.scenario) + _param("time_scale", args.time_scale)
                   + _param("width", args.width) + _param("height", args.height))

    import rclpy
    from nav_msgs.msg import Odometry
    from rclpy.executors import SingleThreadedExecutor

    from alpamayo_ros.msg import PlannerOutput
    from alpamayo_ros.ros.qos import PLAN_QOS, SENSOR_QOS

    planner = NodeProcess("planner_node", "alpamayo_ros.ros.planner_node", planner_args, env,
                          log_dir / "planner_node.log")
    sensors: Optional[NodeProcess] = None
    context = rclpy.Context()
    rclpy.init(context=context, domain_id=domain_id)
    node = rclpy.create_node("alpamayo_demo", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    plans: list = []
    odometry: list = []

    def on_plan(msg):
        plans.append(msg)
        print(f"plan {len(plans):2d}: {describe_plan(msg)}", flush=True)

    node.create_subscription(PlannerOutput, "/" + PLAN_TOPIC, on_plan, PLAN_QOS)
    node.create_subscription(Odometry, "/" + DEFAULT_ODOMETRY_TOPIC, lambda m: odometry.append(
        (m.pose.pose.position.x, m.pose.pose.position.y)), SENSOR_QOS)
    try:
        print(f"starting planner_node ({args.backend}, CPU) on ROS domain {domain_id} ...",
              flush=True)
        if not planner.wait_for_output("planning at", timeout=args.startup_timeout):
            print(f"error: planner_node did not start:\n{planner.output()[-3000:]}",
                  file=sys.stderr)
            return 1
        sensors = NodeProcess("synthetic_sensors", "alpamayo_ros.testbed.synthetic_sensors_node",
                              sensor_args, env, log_dir / "synthetic_sensors.log")
        print(f"synthetic sensors: {args.scenario}, cameras at 10/15/20/30 Hz, odometry "
              f"50 Hz, sim time x{args.time_scale:g}; running {args.seconds:g} s ...",
              flush=True)
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        stop_at = time.monotonic() + 3.0  # the inference in flight may still publish
        while time.monotonic() < stop_at:
            executor.spin_once(timeout_sec=0.05)
    finally:
        for proc in (sensors, planner):
            if proc is not None:
                proc.stop()
        rclpy.shutdown(context=context)
        executor.shutdown()
        node.destroy_node()

    ok = [p for p in plans if p.status == 0]
    if not ok:
        print(f"error: no plan arrived in {args.seconds:g} s ({len(plans)} skipped/failed "
              f"ticks). planner_node log tail:\n{planner.output()[-3000:]}", file=sys.stderr)
        return 1
    png = output_dir / "demo_topdown.png"
    write_topdown_png(ok, np.asarray(odometry, dtype=float).reshape(-1, 2), png)
    # Sim time (the scenario's /clock, slower than the wall clock on a busy machine) and
    # wall time from the newest used frame's arrival.
    latencies = np.array([p.timing.latency for p in ok])
    walls = np.array([p.timing.latency_wall for p in ok])
    print(f"summary: {len(ok)} plans OK, {len(plans) - len(ok)} other ticks; latency "
          f"p50 {np.percentile(latencies, 50):.3f} s sim / {np.percentile(walls, 50):.3f} s "
          f"wall, max {latencies.max():.3f} s sim / {walls.max():.3f} s wall; "
          f"model {ok[-1].model.model_id} ({ok[-1].model.checkpoint or args.backend}); "
          f"top-down view: {png}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=12.0,
                        help="wall seconds to run after the planner is up (default 12)")
    parser.add_argument("--output-dir", default="demo_output",
                        help="where the PNG and the node logs go (default ./demo_output)")
    parser.add_argument("--cache-dir", default=None,
                        help="tiny checkpoint cache (default ~/.cache/alpamayo_ros/...)")
    parser.add_argument("--family", choices=("r1", "1.5"), default="r1",
                        help="tiny checkpoint family: r1 (Alpamayo R1) or 1.5 (Alpamayo 1.5)")
    parser.add_argument("--backend", choices=("alpamayo", "constant_velocity"),
                        default="alpamayo", help="alpamayo = real model code, tiny weights")
    parser.add_argument("--scenario", default="curved_drive")
    parser.add_argument("--rate-hz", type=float, default=2.0)
    parser.add_argument("--time-scale", type=float, default=0.5,
                        help="scenario seconds per wall second (default 0.5: the CPU model "
                             "takes about 0.5-2 s per plan)")
    parser.add_argument("--width", type=int, default=256, help="camera image width [px]")
    parser.add_argument("--height", type=int, default=144, help="camera image height [px]")
    parser.add_argument("--num-samples", type=int, default=3)
    parser.add_argument("--max-coc-tokens", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--domain-id", type=int, default=None,
                        help="ROS_DOMAIN_ID (default: derived from the process id)")
    parser.add_argument("--startup-timeout", type=float, default=120.0)
    return run_demo(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
