"""Navigation in the replay: what each tick saw, and `--nav-compare` (docs/replay.md).

Instructions come from the bag's navigation topic (or one forced by --nav-text) and go
through the node's rules (core.navigation: navigation_ignored_reason, then
PlannerCore.add_navigation and the choice of the newest valid one at t0); this module only
counts and compares.

--nav-compare runs every tick that has an instruction under the three conditions of the
official nav_utils.compare_nav_conditions: with it ("with", the tick's own result, which
the output bag and the metrics use), without navigation ("without": no instruction, no
guidance) and direction-swapped ("swapped": core.navigation.swap_direction of the text).
Every condition is the same prepared input (frames, history, t0) and the same seed, so
the selected trajectories differ only by the instruction. Distances are XY L2 [m] in the
t0 frame between the selected trajectories of two conditions: the largest over the 64
waypoints (`max_m`) and at the last one (`final_m`). A tick without an instruction (none,
expired, empty) is not compared; a swap that changes nothing (no "left"/"right") reuses
the "with" result.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from alpamayo_ros.core.navigation import NavStatus, swap_direction
from alpamayo_ros.core.plan_result import PlanResult, PlanStatus
from alpamayo_ros.core.planner_core import PlannerCore, PreparedInputs

CONDITIONS = ("with", "without", "swapped")
PAIRS = (("with", "without"), ("with", "swapped"), ("without", "swapped"))
# Decimals of distances and coordinates in the report [m] (1 um), as replay/engine.py's.
DECIMALS = 6
# Stamp and validity of the instruction --nav-text forces: valid at every t0.
FORCED_STAMP_NS = 1
FORCED_VALID_FOR_NS = 2 ** 62
FORCED_SOURCE = "--nav-text"


def pair_name(a: str, b: str) -> str:
    return f"{a}_vs_{b}"


def tick_counts(ticks: Sequence[Mapping]) -> dict:
    """Ticks by what they did with navigation: a NavStatus value each, "no_t0" for ticks
    skipped before t0 was found; "with" / "without" the instruction (of ticks with t0)."""
    counts = {s.value: 0 for s in NavStatus}
    counts["no_t0"] = 0
    for t in ticks:
        counts[t.get("navigation_status") or "no_t0"] += 1
    with_ = counts[NavStatus.USED.value]
    counts["with"] = with_
    counts["without"] = sum(counts[s.value] for s in NavStatus) - with_
    return counts


def _selected_xyz(result: PlanResult) -> Optional[np.ndarray]:
    if result.status != PlanStatus.OK or result.selected is None:
        return None
    return np.asarray(result.selected.xyz, dtype=np.float64)


def distances(a: Optional[np.ndarray], b: Optional[np.ndarray]) -> Optional[dict]:
    """{"max_m", "final_m"}: XY L2 between two (64, 3) trajectories; None if one is missing."""
    if a is None or b is None:
        return None
    d = np.linalg.norm(a[:, :2] - b[:, :2], axis=1)
    return {"max_m": round(float(d.max()), DECIMALS), "final_m": round(float(d[-1]), DECIMALS)}


def _variant(prepared: PreparedInputs, text: Optional[str]) -> PreparedInputs:
    """The tick's prepared input with another instruction (own timings: run adds to them)."""
    return dataclasses.replace(
        prepared, timings=dataclasses.replace(prepared.timings),
        model_input=dataclasses.replace(prepared.model_input, navigation_text=text),
        navigation_status=(NavStatus.USED if text else NavStatus.NONE).value)


def compare_conditions(core: PlannerCore, prepared: PreparedInputs, result: PlanResult
                       ) -> tuple[dict, dict]:
    """(report record, {condition: selected xyz or None}) of one prepared tick whose "with"
    result is `result`; runs the model for "without" and (when the swap changes the text)
    "swapped"."""
    text = prepared.model_input.navigation_text
    if not text:
        return {"compared": False,
                "note": f"no instruction at t0 ({prepared.navigation_status})"}, {}
    swapped_text = swap_direction(text)
    results = {"with": result, "without": core.run(_variant(prepared, None))}
    results["swapped"] = (result if swapped_text == text
                          else core.run(_variant(prepared, swapped_text)))
    xyz = {c: _selected_xyz(r) for c, r in results.items()}
    record: dict[str, Any] = {
        "compared": True,
        "texts": {"with": text, "without": "", "swapped": swapped_text},
        "status": {c: r.status.name for c, r in results.items()},
        "reasons": {c: r.reason for c, r in results.items() if r.reason},
        "swap_changes_text": swapped_text != text,
        "selected_xyz": {c: (None if xyz[c] is None
                             else np.round(xyz[c], DECIMALS).tolist())
                         for c in ("without", "swapped")},
        "distances": {pair_name(a, b): distances(xyz[a], xyz[b]) for a, b in PAIRS},
    }
    return record, xyz


def summary(ticks: Sequence[Mapping]) -> dict:
    """Per condition pair over the compared ticks: count, mean / median / largest of the
    per-tick max and final distances [m]; ticks_not_compared: ticks that reached the model
    without an instruction (ticks skipped before it carry no nav_compare record)."""
    records = [t["nav_compare"] for t in ticks if (t.get("nav_compare") or {}).get("compared")]
    out: dict[str, Any] = {
        "conditions": list(CONDITIONS),
        "ticks_compared": len(records),
        "ticks_not_compared": sum(1 for t in ticks if "nav_compare" in t) - len(records),
        "pairs": {}}
    for a, b in PAIRS:
        name = pair_name(a, b)
        found = [r["distances"][name] for r in records if r["distances"][name] is not None]
        stats: dict[str, Any] = {"count": len(found)}
        for key in ("max_m", "final_m"):
            values = np.asarray([f[key] for f in found], dtype=np.float64)
            stats[key] = None if not len(values) else {
                "mean": round(float(values.mean()), DECIMALS),
                "median": round(float(np.median(values)), DECIMALS),
                "max": round(float(values.max()), DECIMALS)}
        out["pairs"][name] = stats
    return out


CSV_COLUMNS = ("navigation_status", "navigation_text", "nav_with_vs_without_max_m",
               "nav_with_vs_without_final_m", "nav_with_vs_swapped_max_m",
               "nav_with_vs_swapped_final_m")


def csv_cells(tick: Mapping) -> list:
    """The CSV_COLUMNS cells of one tick record (distances empty when not compared)."""
    cells = [tick.get("navigation_status", ""), tick.get("navigation_text", "")]
    found = (tick.get("nav_compare") or {}).get("distances") or {}
    for pair in ("with_vs_without", "with_vs_swapped"):
        d = found.get(pair)
        cells += ["", ""] if d is None else [f"{d['max_m']:.6f}", f"{d['final_m']:.6f}"]
    return cells


def summary_lines(bags: Sequence[Mapping]) -> list[str]:
    """Terminal lines: ticks with / without an instruction and the compare distances."""
    lines = []
    for bag in bags:
        nav = bag.get("navigation")
        if not nav or (nav["topic"] is None and nav["forced_text"] is None):
            continue
        counts = nav["tick_counts"]
        name = Path(str(bag.get("bag", ""))).name
        lines.append(f"  {name}: navigation at {counts['with']} ticks, without at "
                     f"{counts['without']} ({counts['expired']} expired, {counts['none']} "
                     f"none, {counts['empty']} empty)")
        compare = bag.get("nav_compare")
        if compare and compare.get("pairs"):
            for pair, stats in compare["pairs"].items():
                if stats["count"]:
                    lines.append(f"    {pair}: max distance mean {stats['max_m']['mean']:.3f}"
                                 f" m (largest {stats['max_m']['max']:.3f} m), final mean "
                                 f"{stats['final_m']['mean']:.3f} m over {stats['count']} "
                                 "ticks")
    return lines


def plot_compare(path: Path | str, bag_result: Mapping, selected: Sequence[Mapping]) -> None:
    """Distances between conditions over time, and the three selected trajectories (t0
    frame) of the tick where with and swapped differ most. selected: per tick, the
    {condition: xyz} of compare_conditions (empty when not compared)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax_d, ax_xy) = plt.subplots(1, 2, figsize=(12, 5))
    ticks = bag_result.get("ticks", [])
    styles = {"with_vs_without": "b", "with_vs_swapped": "r", "without_vs_swapped": "g"}
    for pair, color in styles.items():
        pts = [(t["now_ns"] * 1e-9, t["nav_compare"]["distances"][pair])
               for t in ticks if (t.get("nav_compare") or {}).get("compared")
               and t["nav_compare"]["distances"][pair] is not None]
        if pts:
            x = np.asarray([p[0] for p in pts]) - pts[0][0]
            ax_d.plot(x, [p[1]["max_m"] for p in pts], color + ".-", lw=1, ms=3,
                      label=f"{pair} max")
            ax_d.plot(x, [p[1]["final_m"] for p in pts], color + "x--", lw=1, ms=3,
                      label=f"{pair} final")
    ax_d.set_xlabel("tick time [s from first compared tick]")
    ax_d.set_ylabel("XY distance of selected trajectories [m]")
    ax_d.set_title("navigation conditions: distance per tick")
    if ax_d.lines:
        ax_d.legend(loc="best", fontsize=7)
    best, best_d = None, -1.0
    for k, t in enumerate(ticks):
        d = ((t.get("nav_compare") or {}).get("distances") or {}).get("with_vs_swapped")
        if d is not None and k < len(selected) and d["max_m"] > best_d:
            best, best_d = k, d["max_m"]
    if best is not None:
        texts = ticks[best]["nav_compare"]["texts"]
        for condition, style in (("with", "k-"), ("without", "b--"), ("swapped", "r-.")):
            xyz = selected[best].get(condition)
            if xyz is not None:
                label = f"{condition}: {texts[condition]!r}" if texts[condition] else condition
                ax_xy.plot(xyz[:, 0], xyz[:, 1], style, lw=1.5, label=label)
        ax_xy.set_title(f"tick {best} (largest with/swapped distance)")
        ax_xy.legend(loc="best", fontsize=7)
        ax_xy.set_aspect("equal", adjustable="datalim")
    ax_xy.set_xlabel("x [m] (t0 frame)")
    ax_xy.set_ylabel("y [m] (t0 frame)")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
