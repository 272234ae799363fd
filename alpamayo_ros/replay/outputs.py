"""Files written by the replay tool: output bag, per-tick CSV, PNG plots.

The output bag holds what the live node would have published for each tick: every row of
core.outputs.OUTPUTS that the parameters enable (the node's own table and builders), on
its topic resolved as the node resolves it (relative names in --namespace, "/" by default):
  /alpamayo/plan       alpamayo_ros/msg/PlannerOutput (every tick, skipped ones included)
  /alpamayo/path       nav_msgs/Path of the selected sample in the t0 base frame (OK ticks)
  /alpamayo/path_odom  nav_msgs/Path of the same sample in the odometry frame (OK ticks)
  /alpamayo/coc        std_msgs/String, the selected sample's reasoning (OK ticks)
  /alpamayo/markers    visualization_msgs/MarkerArray for RViz (OK ticks, markers.enabled)
  autoware.trajectory.topic  autoware_planning_msgs/Trajectory (OK ticks,
                       autoware.trajectory.enabled)
Header stamps are t0 (the tick time for ticks without t0); the bag log time is the tick time
(stepped replay: planning takes no bag time). PlannerTiming.latency is therefore
tick time - t0, and latency_wall is 0 (nothing arrives on a wall clock).
"""
from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from alpamayo_ros.core import outputs
from alpamayo_ros.core.outputs import OutputTick, enabled_outputs
from alpamayo_ros.core.plan_message import OutputContext, output_stamp_ns
from alpamayo_ros.core.plan_result import PlanResult, PlanStatus
from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.types import NS_PER_S
from alpamayo_ros.bag import bag_io
from alpamayo_ros.replay import navigation as replay_navigation
from alpamayo_ros.replay.engine import resolve_topic

PLAN_TOPIC = "/" + outputs.PLAN_TOPIC
PATH_TOPIC = "/" + outputs.PATH_TOPIC
PATH_ODOM_TOPIC = "/" + outputs.PATH_ODOM_TOPIC


def check_output_types(values: Mapping) -> None:
    """ConfigError naming the enabling parameter when an enabled row's message package
    (e.g. Autoware's autoware_planning_msgs) is not installed, before any bag is read."""
    for row in enabled_outputs(values):
        if row.enabled_by is not None:
            try:
                bag_io.msg_class(row.type)
            except bag_io.BagError as exc:
                raise ConfigError(f"{row.enabled_by} is true but {exc}") from None


def write_plan_bag(path: Path | str, results: Sequence[PlanResult], context: OutputContext,
                   values: Mapping, storage: str = "mcap", namespace: str = "/") -> None:
    """Write what the node publishes for each tick: the rows of core.outputs.OUTPUTS that
    the parameter values enable (a PlannerOutput per tick, paths, CoC, markers and the
    Autoware Trajectory of OK ticks), topics resolved in `namespace`."""
    path = Path(path)
    if path.exists():
        shutil.rmtree(path)  # replay outputs are regenerated on every run
    rows = [(row, resolve_topic(row.topic_in(values), namespace))
            for row in enabled_outputs(values)]
    with bag_io.BagWriter(path, storage) as writer:
        for r in results:
            tick = OutputTick(r, context, latency_s=(r.now_ns - output_stamp_ns(r)) / NS_PER_S,
                              marker_text_height=values["markers.coc_text_height"],
                              values=values)
            for row, topic in rows:
                data = row.build(tick)
                if data is not None:
                    writer.write(topic, row.type, r.now_ns,
                                 bag_io.to_bag_message(data))


CSV_COLUMNS = ("bag", "tick", "epoch", "now_s", "t0_s", "status", "reason", "v0",
               "candidates", "selected_index", "min_ade_1s", "min_fde_1s", "min_ade_3s",
               "min_fde_3s", "min_ade_6.4s", "min_fde_6.4s", "metrics_note", "coc",
               *replay_navigation.CSV_COLUMNS, "model_total_s", "wall_s")


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
                    bag["bag"], tick["tick"], tick["epoch"], f"{tick['now_ns'] / NS_PER_S:.3f}",
                    "" if tick["t0_ns"] is None else f"{tick['t0_ns'] / NS_PER_S:.3f}",
                    tick["status"], tick["reason"],
                    "" if tick["v0"] is None else f"{tick['v0']:.4f}",
                    len(tick["candidates"]), tick["selected_index"],
                    metric("1", "min_ade"), metric("1", "min_fde"),
                    metric("3", "min_ade"), metric("3", "min_fde"),
                    metric("6.4", "min_ade"), metric("6.4", "min_fde"),
                    tick["metrics_note"], sel.get("coc", ""),
                    *replay_navigation.csv_cells(tick),
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
        pts = [(t["now_ns"] / NS_PER_S, t["metrics"][key]["min_ade"]) for t in ticks
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
