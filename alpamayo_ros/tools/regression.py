"""Compare a replay report against a golden (previous) report: pure functions + CLI glue.

What is compared (tolerances in `Tolerances`):
* per tick (matched by bag, epoch and tick time): status (OK -> not OK is a regression),
  number of candidates, and the largest waypoint deviation of every candidate [m];
* per-bag and aggregate mean minADE / minFDE per horizon: may not grow by more than
  metric_abs + metric_rel * golden [m]; fewer scored ticks is a regression too;
* CoC text of every candidate: exact, unless ignore_coc;
* latency (mean model time of OK ticks per bag) is always reported as a note; it is a
  regression only when asked (compare_latency, `--compare-latency`: machine load must not
  decide a verdict by default), both reports carry the same hardware fingerprint and it
  grew by more than latency_rel * golden + latency_abs [s].

`compare_reports` returns a `Comparison` (findings + verdict); `format_findings` renders a
readable diff. Exit codes of the CLI: 0 pass, 1 regression, 2 error (unreadable report,
different bag sets, different report formats).

Standalone: ``python -m alpamayo_ros.tools.regression CURRENT.json GOLDEN.json``; the replay
command runs the same comparison with ``--golden``.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
from alpamayo_ros.core.types import NS_PER_S

EXIT_PASS, EXIT_REGRESSION, EXIT_ERROR = 0, 1, 2
REGRESSION, NOTE = "regression", "note"


class ReportError(ValueError):
    """A report cannot be compared (unreadable, other format, other bags)."""


@dataclass(frozen=True)
class Tolerances:
    """trajectory_m: max waypoint deviation per candidate [m]; metric_abs [m] and
    metric_rel [-]: allowed growth of mean minADE/minFDE; compare_latency: make a slower
    mean model time a regression (else it is only reported); latency_rel [-] and
    latency_abs [s]: its allowed growth."""

    trajectory_m: float = 0.05
    metric_abs: float = 0.02
    metric_rel: float = 0.05
    latency_rel: float = 0.25
    latency_abs: float = 0.005
    ignore_coc: bool = False
    compare_latency: bool = False


@dataclass(frozen=True)
class Finding:
    severity: str     # REGRESSION or NOTE
    where: str        # "bag 0 (name) tick 12 @ 1700000001.500 s" / "aggregate"
    message: str


@dataclass
class Comparison:
    findings: list = field(default_factory=list)
    ticks_compared: int = 0
    max_trajectory_deviation_m: float = 0.0
    latency_compared: bool = False

    @property
    def regressions(self) -> list:
        return [f for f in self.findings if f.severity == REGRESSION]

    @property
    def passed(self) -> bool:
        return not self.regressions

    def add(self, severity: str, where: str, message: str) -> None:
        self.findings.append(Finding(severity, where, message))


def load_report(path: Path | str) -> dict:
    """Read a replay report (JSON); ReportError when it is not one."""
    try:
        report = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ReportError(f"{path}: cannot read report: {exc}") from exc
    if not isinstance(report, dict) or "bags" not in report or "format" not in report:
        raise ReportError(f"{path}: not a replay report (need keys 'format' and 'bags')")
    return report


def _bag_label(index: int, bag: Mapping) -> str:
    return f"bag {index} ({Path(str(bag.get('bag', '?'))).name})"


def max_deviation(a: Sequence, b: Sequence) -> float:
    """Largest Euclidean distance between corresponding waypoints [m] (inf on shape mismatch)."""
    xa, xb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if xa.shape != xb.shape:
        return float("inf")
    if xa.size == 0:
        return 0.0
    return float(np.max(np.linalg.norm(xa - xb, axis=-1)))


def compare_ticks(current: Mapping, golden: Mapping, where: str, tol: Tolerances,
                  out: Comparison) -> None:
    """Compare two tick records of the same tick time."""
    if current["status"] != golden["status"]:
        severity = REGRESSION if golden["status"] == "OK" else NOTE
        out.add(severity, where, f"status {golden['status']} -> {current['status']}"
                + (f" ({current['reason']})" if current.get("reason") else ""))
        return
    cc, gc = current["candidates"], golden["candidates"]
    if len(cc) != len(gc):
        out.add(REGRESSION, where, f"candidates: have {len(cc)}, golden {len(gc)}")
        return
    for k, (c, g) in enumerate(zip(cc, gc)):
        dev = max_deviation(c["xyz"], g["xyz"])
        out.max_trajectory_deviation_m = max(out.max_trajectory_deviation_m, dev)
        if dev > tol.trajectory_m:
            out.add(REGRESSION, where, f"candidate {k}: max waypoint deviation {dev:.4f} m > "
                                       f"tolerance {tol.trajectory_m:g} m")
        if not tol.ignore_coc and c.get("coc", "") != g.get("coc", ""):
            out.add(REGRESSION, where, f"candidate {k}: CoC changed:\n"
                                       f"    golden:  {g.get('coc', '')!r}\n"
                                       f"    current: {c.get('coc', '')!r}")
        if c.get("valid") != g.get("valid"):
            severity = REGRESSION if g.get("valid") else NOTE
            out.add(severity, where, f"candidate {k}: valid {g.get('valid')} -> {c.get('valid')}"
                                     f" {c.get('invalid_reason', '')}".rstrip())


def compare_metrics(current: Mapping, golden: Mapping, where: str, tol: Tolerances,
                    out: Comparison) -> None:
    """Aggregate minADE/minFDE per horizon may not worsen beyond the tolerance."""
    for horizon, g in golden.items():
        c = current.get(horizon)
        if c is None:
            out.add(REGRESSION, where, f"{horizon} s: metrics missing (golden has them)")
            continue
        if c["count"] < g["count"]:
            out.add(REGRESSION, where, f"{horizon} s: scored ticks {g['count']} -> {c['count']}")
        for key, name in (("mean_min_ade", "minADE"), ("mean_min_fde", "minFDE")):
            gv, cv = g.get(key), c.get(key)
            if gv is None:
                continue
            if cv is None:
                out.add(REGRESSION, where, f"{horizon} s: {name} missing (golden {gv:.4f} m)")
                continue
            allowed = gv + tol.metric_abs + tol.metric_rel * abs(gv)
            if cv > allowed:
                out.add(REGRESSION, where, f"{horizon} s: mean {name} {gv:.4f} -> {cv:.4f} m "
                                           f"(allowed <= {allowed:.4f} m)")
            elif abs(cv - gv) > 1e-9:
                out.add(NOTE, where, f"{horizon} s: mean {name} {gv:.4f} -> {cv:.4f} m")


def _mean_model_time(timings: Mapping, ok_ticks: set) -> Optional[float]:
    values = [t["model_total_s"] for t in timings.get("ticks", []) if t["tick"] in ok_ticks]
    return float(np.mean(values)) if values else None


def compare_latency(current: Mapping, golden: Mapping, tol: Tolerances, out: Comparison) -> None:
    """Mean model time per bag: reported always; a regression only with compare_latency
    and matching hardware fingerprints."""
    hc = current.get("timings", {}).get("hardware", {})
    hg = golden.get("timings", {}).get("hardware", {})
    same_hardware = bool(hc) and hc.get("fingerprint") == hg.get("fingerprint")
    if tol.compare_latency and not same_hardware:
        out.add(NOTE, "latency", "not compared: hardware differs "
                f"(golden {hg.get('fingerprint', '?')} {hg.get('cpu', '')} {hg.get('gpu', '')}, "
                f"current {hc.get('fingerprint', '?')} {hc.get('cpu', '')} {hc.get('gpu', '')})")
    out.latency_compared = tol.compare_latency and same_hardware
    for i, (cb, gb) in enumerate(zip(current["bags"], golden["bags"])):
        try:
            ct = current["timings"]["bags"][i]
            gt = golden["timings"]["bags"][i]
        except (KeyError, IndexError):
            continue
        c_ok = {t["tick"] for t in cb.get("ticks", []) if t["status"] == "OK"}
        g_ok = {t["tick"] for t in gb.get("ticks", []) if t["status"] == "OK"}
        cm, gm = _mean_model_time(ct, c_ok), _mean_model_time(gt, g_ok)
        if cm is None or gm is None:
            continue
        allowed = gm * (1.0 + tol.latency_rel) + tol.latency_abs
        where = _bag_label(i, cb)
        change = f"mean model time {gm * 1e3:.1f} -> {cm * 1e3:.1f} ms"
        if out.latency_compared and cm > allowed:
            out.add(REGRESSION, where, f"{change} (allowed <= {allowed * 1e3:.1f} ms)")
        else:
            out.add(NOTE, where, change + ("" if out.latency_compared else
                                           " (reported, not compared)"))


def compare_reports(current: Mapping, golden: Mapping, tol: Tolerances = Tolerances()
                    ) -> Comparison:
    """Compare two replay reports; ReportError when they cannot be compared."""
    if current.get("format") != golden.get("format"):
        raise ReportError(f"report formats differ: have {current.get('format')!r}, golden "
                          f"{golden.get('format')!r}")
    names_c = [Path(str(b["bag"])).name for b in current["bags"]]
    names_g = [Path(str(b["bag"])).name for b in golden["bags"]]
    if names_c != names_g:
        raise ReportError(f"bag lists differ: have {names_c}, golden {names_g}")
    out = Comparison()
    for i, (cb, gb) in enumerate(zip(current["bags"], golden["bags"])):
        label = _bag_label(i, cb)
        if cb["status"] != "ok":
            out.add(REGRESSION, label, f"bag failed: {cb.get('error', '')}")
            continue
        by_time = {(t["epoch"], t["now_ns"]): t for t in cb.get("ticks", [])}
        for g in gb.get("ticks", []):
            where = f"{label} tick {g['tick']} @ {g['now_ns'] / NS_PER_S:.3f} s"
            c = by_time.pop((g["epoch"], g["now_ns"]), None)
            if c is None:
                out.add(REGRESSION, where, "tick missing in the current report")
                continue
            out.ticks_compared += 1
            compare_ticks(c, g, where, tol, out)
        for (_, now_ns), c in sorted(by_time.items()):
            out.add(NOTE, f"{label} tick {c['tick']} @ {now_ns / NS_PER_S:.3f} s",
                    "new tick (not in golden)")
        if "metrics" in gb:
            compare_metrics(cb.get("metrics", {}), gb["metrics"], label, tol, out)
    compare_metrics(current["aggregate"]["metrics"], golden["aggregate"]["metrics"],
                    "aggregate", tol, out)
    compare_latency(current, golden, tol, out)
    return out


def format_findings(result: Comparison, max_lines: int = 60) -> str:
    """Readable diff: regressions first, then notes, then a verdict line."""
    lines = []
    regs = result.regressions
    notes = [f for f in result.findings if f.severity == NOTE]
    for f in regs[:max_lines]:
        lines.append(f"REGRESSION  {f.where}: {f.message}")
    if len(regs) > max_lines:
        lines.append(f"... {len(regs) - max_lines} more regressions")
    for f in notes[:max(0, max_lines - len(regs))]:
        lines.append(f"note        {f.where}: {f.message}")
    verdict = "PASS" if result.passed else f"FAIL ({len(regs)} regressions)"
    lines.append(f"{verdict}: {result.ticks_compared} ticks compared, max trajectory "
                 f"deviation {result.max_trajectory_deviation_m:.4g} m, latency "
                 f"{'compared' if result.latency_compared else 'not compared'}")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The regression options shared by the replay command and this module's CLI."""
    g = parser.add_argument_group("regression")
    if not any(a.dest == "golden" for a in parser._actions):
        g.add_argument("--golden", type=Path, default=None,
                       help="previous report.json to compare against (exit 1 on regression)")
    d = Tolerances()
    g.add_argument("--trajectory-tolerance", type=float, default=d.trajectory_m,
                   help="max waypoint deviation per candidate [m]")
    g.add_argument("--metric-tolerance", type=float, default=d.metric_abs,
                   help="allowed growth of mean minADE/minFDE [m] (plus --metric-rel-tolerance)")
    g.add_argument("--metric-rel-tolerance", type=float, default=d.metric_rel,
                   help="allowed relative growth of mean minADE/minFDE [-]")
    g.add_argument("--compare-latency", action="store_true",
                   help="a slower mean model time is a regression (same hardware only); "
                        "by default latency is reported, not compared")
    g.add_argument("--latency-tolerance", type=float, default=d.latency_rel,
                   help="with --compare-latency: allowed relative growth of the mean model "
                        "time [-]")
    g.add_argument("--ignore-coc", action="store_true", help="do not compare CoC text")


def tolerances_from_args(args: argparse.Namespace) -> Tolerances:
    return Tolerances(trajectory_m=args.trajectory_tolerance, metric_abs=args.metric_tolerance,
                      metric_rel=args.metric_rel_tolerance, latency_rel=args.latency_tolerance,
                      ignore_coc=args.ignore_coc, compare_latency=args.compare_latency)


def run_comparison(current: Mapping, golden_path: Path | str, tol: Tolerances,
                   stream=None) -> int:
    """Compare, print the diff, return the exit code."""
    stream = stream or sys.stdout
    try:
        golden = load_report(golden_path)
        result = compare_reports(current, golden, tol)
    except ReportError as exc:
        print(f"regression: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    print(format_findings(result), file=stream)
    return EXIT_PASS if result.passed else EXIT_REGRESSION


def run_from_args(args: argparse.Namespace, current: Mapping) -> int:
    return run_comparison(current, args.golden, tolerances_from_args(args))


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m alpamayo_ros.tools.regression",
                                description="Compare a replay report with a golden report.")
    p.add_argument("current", type=Path, help="report.json of the run to check")
    p.add_argument("golden", type=Path, help="previous report.json")
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        current = load_report(args.current)
    except ReportError as exc:
        print(f"regression: error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    return run_comparison(current, args.golden, tolerances_from_args(args))


if __name__ == "__main__":
    sys.exit(main())
