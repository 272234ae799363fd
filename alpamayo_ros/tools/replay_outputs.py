"""Files written by the replay tool: output bag, per-tick CSV, PNG plots.

The output bag holds what the live node would have published for each tick, built with
rosbags message classes (same field rules as ros/convert.py's plan_to_msg):
  /alpamayo/plan       alpamayo_ros/msg/PlannerOutput (every tick, skipped ones included)
  /alpamayo/path       nav_msgs/Path of the selected sample in the t0 base frame (OK ticks)
  /alpamayo/path_odom  nav_msgs/Path of the same sample in the odometry frame (OK ticks)
Header stamps are t0 (the tick time for ticks without t0); the bag log time is the tick time
(stepped replay: planning takes no bag time). PlannerTiming.latency is therefore
tick time - t0, not a wall-clock latency.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from alpamayo_ros.core.plan_result import PlanResult, PlanStatus
from alpamayo_ros.tools import bag_io

PLAN_TOPIC = "/alpamayo/plan"
PATH_TOPIC = "/alpamayo/path"
PATH_ODOM_TOPIC = "/alpamayo/path_odom"


def _poses(xyz: np.ndarray, rot: np.ndarray) -> list:
    quats = Rotation.from_matrix(np.asarray(rot, dtype=np.float64)).as_quat()
    return [bag_io.pose_msg(p, q) for p, q in zip(np.asarray(xyz, dtype=np.float64), quats)]


def _floats(values) -> np.ndarray:
    return np.zeros(0, np.float32) if values is None else \
        np.asarray(values, dtype=np.float32).ravel()


def plan_output_message(result: PlanResult, values: Mapping[str, Any], odom_frame_id: str = "odom"):
    """PlanResult -> rosbags alpamayo_ros/msg/PlannerOutput."""
    t = bag_io.typestore().types
    stamp_ns = result.t0_ns if result.t0_ns is not None else result.now_ns
    offsets_ns = None
    if result.waypoint_stamps_ns is not None and result.t0_ns is not None:
        offsets_ns = np.asarray(result.waypoint_stamps_ns, dtype=np.int64) - result.t0_ns
    candidates = []
    for c in result.candidates:
        candidates.append(t["alpamayo_ros/msg/TrajectoryCandidate"](
            poses=_poses(c.xyz, c.rot),
            time_from_t0=[] if offsets_ns is None else
            [bag_io.ns_to_duration(d) for d in offsets_ns],
            yaw=_floats(c.yaw), speed=_floats(c.speed), acceleration=_floats(c.acceleration),
            curvature=_floats(c.curvature), coc=c.coc, coc_token_count=int(c.coc_token_count),
            coc_truncated=bool(c.coc_truncated), valid=bool(c.valid),
            invalid_reason=c.invalid_reason))
    zero = bag_io.ns_to_stamp(0)
    frames = result.frame_stamps_ns
    manifest = t["alpamayo_ros/msg/InputManifest"](
        camera_indices=np.asarray(values["camera_indices"], dtype=np.uint8),
        camera_topics=list(values["camera_topics"]),
        frame_stamps=[] if frames is None else [bag_io.ns_to_stamp(s) for s in frames],
        frame_skew=_floats(result.frame_skews),
        max_frame_skew=float(result.max_frame_skew),
        camera_skew=float(result.camera_skew),
        history_start=zero if result.history_stamps_ns is None
        else bag_io.ns_to_stamp(result.history_stamps_ns[0]),
        history_end=zero if result.history_stamps_ns is None
        else bag_io.ns_to_stamp(result.history_stamps_ns[-1]),
        odometry_samples=int(result.odometry_samples),
        odometry_newest=zero if result.odometry_newest_ns is None
        else bag_io.ns_to_stamp(result.odometry_newest_ns),
        history_poses=[] if result.history_xyz is None
        else _poses(result.history_xyz, result.history_rot))
    tm = result.timings
    timing = t["alpamayo_ros/msg/PlannerTiming"](
        preprocess=tm.model.preprocess, vision_prefill=tm.model.vision_prefill,
        coc_decode=tm.model.coc_decode, diffusion=tm.model.diffusion,
        postprocess=tm.model.postprocess, model_total=tm.model.total,
        input_preparation=tm.input_preparation, tick_to_model_start=0.0,
        latency=(result.now_ns - stamp_ns) / 1e9, latency_wall=0.0)
    seed = values["model.seed"]
    model = t["alpamayo_ros/msg/ModelInfo"](
        checkpoint=values["model.checkpoint_dir"], model_id=result.model_id,
        device=values["model.device"], dtype=values["model.dtype"],
        num_samples=values["model.num_samples"], diffusion_steps=values["model.diffusion_steps"],
        max_coc_tokens=values["model.max_coc_tokens"], sample_coc=values["model.sample_coc"],
        seed=int(seed))
    pose0 = result.t0_pose_odom
    t0_pose = bag_io.pose_msg((0, 0, 0), (0, 0, 0, 1)) if pose0 is None else \
        bag_io.pose_msg(pose0.position, pose0.quaternion_xyzw)
    return t["alpamayo_ros/msg/PlannerOutput"](
        header=bag_io.header(stamp_ns, values["base_frame_id"]), status=int(result.status),
        reason_code=int(result.reason_code), status_reason=result.reason,
        tick_stamp=bag_io.ns_to_stamp(result.now_ns), odom_frame_id=odom_frame_id, t0_pose_odom=t0_pose,
        v0=float(result.v0) if math.isfinite(result.v0) else float("nan"),
        candidates=candidates, selected_index=int(result.selected_index), inputs=manifest,
        timing=timing, model=model)


def write_plan_bag(path: Path | str, results: Sequence[PlanResult], values: Mapping[str, Any],
                   storage: str = "mcap", odom_frame_id: str = "odom") -> None:
    """Write one PlannerOutput per tick and the selected paths of OK ticks."""
    path = Path(path)
    if path.exists():
        import shutil
        shutil.rmtree(path)  # replay outputs are regenerated on every run
    base = values["base_frame_id"]
    with bag_io.BagWriter(path, storage) as writer:
        for r in results:
            writer.write(PLAN_TOPIC, bag_io.PLANNER_OUTPUT_TYPE, r.now_ns,
                         plan_output_message(r, values, odom_frame_id))
            if r.status == PlanStatus.OK and r.selected is not None:
                c = r.selected
                for topic, frame, xyz, rot in ((PATH_TOPIC, base, c.xyz, c.rot),
                                               (PATH_ODOM_TOPIC, odom_frame_id, c.xyz_odom,
                                                c.rot_odom)):
                    quats = Rotation.from_matrix(np.asarray(rot)).as_quat()
                    writer.write(topic, bag_io.PATH_TYPE, r.now_ns,
                                 bag_io.path_message(r.t0_ns, frame, xyz, quats,
                                                     r.waypoint_stamps_ns))


CSV_COLUMNS = ("bag", "tick", "epoch", "now_s", "t0_s", "status", "reason", "v0",
               "candidates", "selected_index", "min_ade_1s", "min_fde_1s", "min_ade_3s",
               "min_fde_3s", "min_ade_6.4s", "min_fde_6.4s", "metrics_note", "coc",
               "model_total_s", "wall_s")


def write_csv(path: Path | str, report: Mapping) -> None:
    """One row per tick of every bag (timing columns last; they vary between runs)."""
    timing_by_bag = {i: {t["tick"]: t for t in b.get("ticks", [])}
                     for i, b in enumerate(report["timings"]["bags"])}
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(CSV_COLUMNS)
        for i, bag in enumerate(report["bags"]):
            for tick in bag.get("ticks", []):
                m = tick.get("metrics") or {}
                tm = timing_by_bag.get(i, {}).get(tick["tick"], {})
                sel = tick["candidates"][tick["selected_index"]] if tick["candidates"] else {}

                def metric(h: str, k: str) -> str:
                    v = m.get(h, {}).get(k)
                    return "" if v is None else f"{v:.6f}"
                w.writerow([
                    bag["bag"], tick["tick"], tick["epoch"], f"{tick['now_ns'] / 1e9:.3f}",
                    "" if tick["t0_ns"] is None else f"{tick['t0_ns'] / 1e9:.3f}",
                    tick["status"], tick["reason"],
                    "" if tick["v0"] is None else f"{tick['v0']:.4f}",
                    len(tick["candidates"]), tick["selected_index"],
                    metric("1", "min_ade"), metric("1", "min_fde"),
                    metric("3", "min_ade"), metric("3", "min_fde"),
                    metric("6.4", "min_ade"), metric("6.4", "min_fde"),
                    tick["metrics_note"], sel.get("coc", ""),
                    f"{tm.get('model_total_s', 0.0):.6f}", f"{tm.get('wall_s', 0.0):.6f}"])


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt
    return plt


def plot_bag(path: Path | str, bag_result: Mapping, results: Sequence[PlanResult],
             max_paths: int = 12, odometry_paths: Sequence[np.ndarray] = ()) -> None:
    """Top-down odometry-frame paths of sampled OK ticks and minADE over time.

    odometry_paths: the bag's odometry positions (N, 3) per epoch, drawn as the driven
    path the plans are scored against.
    """
    plt = _pyplot()
    fig, (ax_map, ax_err) = plt.subplots(1, 2, figsize=(12, 5))
    for k, xyz in enumerate(odometry_paths):
        if len(xyz):
            ax_map.plot(xyz[:, 0], xyz[:, 1], "-", color="0.7", lw=4, zorder=0,
                        label="driven path (odometry)" if k == 0 else None)
    ok = [r for r in results if r.status == PlanStatus.OK and r.selected is not None]
    hist = [r.t0_pose_odom.position for r in ok if r.t0_pose_odom is not None]
    if hist:
        hist = np.asarray(hist)
        ax_map.plot(hist[:, 0], hist[:, 1], "k.-", lw=1, ms=3, label="t0 poses (odometry)")
    step = max(1, len(ok) // max_paths)
    for k, r in enumerate(ok[::step]):
        for j, c in enumerate(r.candidates):
            ax_map.plot(c.xyz_odom[:, 0], c.xyz_odom[:, 1], "-", lw=1,
                        color=plt.cm.viridis(k / max(1, len(ok[::step]) - 1)),
                        alpha=1.0 if j == r.selected_index else 0.35)
    ax_map.set_aspect("equal", adjustable="datalim")
    ax_map.set_xlabel("x [m] (odom)")
    ax_map.set_ylabel("y [m] (odom)")
    ax_map.set_title(f"{Path(str(bag_result.get('bag', ''))).name}: plans of sampled ticks")
    if ax_map.get_legend_handles_labels()[0]:
        ax_map.legend(loc="best", fontsize=8)
    ticks = bag_result.get("ticks", [])
    for key, style in (("1", "g.-"), ("3", "b.-"), ("6.4", "r.-")):
        pts = [(t["now_ns"] / 1e9, t["metrics"][key]["min_ade"]) for t in ticks
               if t.get("metrics") and t["metrics"].get(key, {}).get("min_ade") is not None]
        if pts:
            pts = np.asarray(pts)
            ax_err.plot(pts[:, 0] - pts[0, 0], pts[:, 1], style, lw=1, ms=3,
                        label=f"minADE {key} s")
    ax_err.set_xlabel("tick time [s from first scored tick]")
    ax_err.set_ylabel("minADE [m]")
    ax_err.set_title("minADE over time")
    if ax_err.lines:
        ax_err.legend(loc="best", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def write_summary_plot(path: Path | str, report: Mapping) -> None:
    """Mean minADE / minFDE per horizon and bag (bar chart)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    bags = report["bags"]
    horizons = list(report["aggregate"]["metrics"])
    width = 0.8 / max(1, len(bags))
    for i, bag in enumerate(bags):
        means = [(bag.get("metrics", {}).get(h, {}).get("mean_min_ade") or 0.0) for h in horizons]
        ax.bar(np.arange(len(horizons)) + i * width, means, width,
               label=Path(bag["bag"]).name)
    ax.set_xticks(np.arange(len(horizons)) + 0.4 - width / 2)
    ax.set_xticklabels([f"{h} s" for h in horizons])
    ax.set_ylabel("mean minADE [m]")
    ax.set_title("replay: mean minADE per horizon")
    if bags:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
