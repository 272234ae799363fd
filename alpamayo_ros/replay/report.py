"""The replay report: deterministic sections (parameters, options, per-bag results and
aggregate metrics) plus a separate `timings` section with the hardware fingerprint.

Two reports of the same bags, parameters and seed are byte-identical once `timings` is
removed (`without_timings`); `report_json` writes the canonical text.
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any, Mapping, Sequence

from alpamayo_ros.replay import navigation as replay_navigation
from alpamayo_ros.replay.engine import ReplayOptions
from alpamayo_ros.replay.scoring import aggregate_metrics

REPORT_FORMAT = "alpamayo_replay_report/1"


def hardware_fingerprint(values: Mapping[str, Any]) -> dict:
    """What the latency numbers depend on; `fingerprint` hashes the rest."""
    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    gpu = ""
    if str(values.get("model.device", "cpu")).startswith("cuda") and "torch" in sys.modules:
        torch = sys.modules["torch"]
        try:
            if torch.cuda.is_available():
                gpu = torch.cuda.get_device_name(0)
        except Exception:  # no driver: report no GPU
            gpu = ""
    info = {"machine": platform.machine(), "cpu": cpu, "cpu_count": os.cpu_count() or 0,
            "gpu": gpu, "device": str(values.get("model.device", "")),
            "dtype": str(values.get("model.dtype", "")),
            "backend": str(values.get("model.backend", ""))}
    info["fingerprint"] = hashlib.sha256(json.dumps(info, sort_keys=True).encode()).hexdigest()[:16]
    return info


def build_report(values: Mapping[str, Any], options: ReplayOptions,
                 outcomes: Sequence[Mapping]) -> dict:
    """Whole report: deterministic sections plus the separate `timings` section."""
    bags = [o["result"] for o in outcomes]
    all_ticks = [t for b in bags for t in b.get("ticks", [])]
    opts = asdict(options)
    opts.pop("progress")
    return {
        "format": REPORT_FORMAT,
        "parameters": {k: values[k] for k in sorted(values)},
        "replay_options": opts,
        "bags": bags,
        "aggregate": {"bags": len(bags),
                      "bags_with_errors": sum(1 for b in bags if b["status"] != "ok"),
                      "ticks": len(all_ticks),
                      "ok_ticks": sum(1 for t in all_ticks if t["status"] == "OK"),
                      "metrics": aggregate_metrics(all_ticks, options.horizons),
                      "navigation_ticks": replay_navigation.tick_counts(all_ticks),
                      **({"nav_compare": replay_navigation.summary(all_ticks)}
                         if options.nav_compare else {})},
        "timings": {"hardware": hardware_fingerprint(values),
                    "bags": [o["timings"] for o in outcomes]},
    }


def report_json(report: Mapping) -> str:
    """Canonical JSON text (sorted keys, no NaN) so equal reports are equal bytes."""
    return json.dumps(report, sort_keys=True, indent=1, allow_nan=False) + "\n"


def without_timings(report: Mapping) -> dict:
    """The deterministic part of a report (what determinism checks compare)."""
    return {k: v for k, v in report.items() if k != "timings"}


def print_summary(report: Mapping, output_dir: Path) -> None:
    """A few lines for the terminal: ticks planned and mean metrics per horizon."""
    agg = report["aggregate"]
    print(f"replayed {agg['bags']} bag(s): {agg['ticks']} ticks, {agg['ok_ticks']} planned")
    for key, m in agg["metrics"].items():
        if m["count"]:
            print(f"  {key:>4} s: minADE {m['mean_min_ade']:.3f} m, minFDE "
                  f"{m['mean_min_fde']:.3f} m over {m['count']} ticks")
    for line in replay_navigation.summary_lines(report["bags"]):
        print(line)
    print(f"report: {output_dir / 'report.json'}")
