"""The replay command gives the same reports, CSV rows and exit codes as the recorded
reference (test/data/replay_reference.json), timings excluded.

The reference was recorded with the command as it was before a refactoring; a change that
is meant to alter replay outputs re-records it deliberately:

    ALPAMAYO_UPDATE_REPLAY_REFERENCE=1 scripts/run_tests.sh test/test_replay_reference.py

and the commit says why the outputs changed.
"""
from __future__ import annotations

import csv
import hashlib
import json
import os
from pathlib import Path

import pytest

from alpamayo_ros.tools import make_bag, replay
from alpamayo_ros.replay import report as replay_report
from scenario_bags import write_bag

REFERENCE = Path(__file__).parent / "data" / "replay_reference.json"
UPDATE = os.environ.get("ALPAMAYO_UPDATE_REPLAY_REFERENCE") == "1"
# Columns of ticks.csv that hold wall-clock times (they vary between runs).
TIMING_COLUMNS = ("model_total_s", "wall_s")
# Runs stored in full; the others are stored as a hash of their outputs (the reference
# file stays small, and a full run already shows what differs).
FULL_RUNS = ("both", "wrong_transport")


# Floats are compared to 10 significant digits: the last bits of spline and solver results
# differ between x86-64 CPUs (with and without AVX-512), which is not a change of the replay.
SIGNIFICANT_DIGITS = 10


def _rounded(value):
    """`value` with every float (and every CSV cell that holds one) to SIGNIFICANT_DIGITS."""
    if isinstance(value, float):
        return float(f"{value:.{SIGNIFICANT_DIGITS}g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    if isinstance(value, str) and any(c in value for c in ".eE"):
        try:
            number = float(value)
        except ValueError:
            return value
        return f"{number:.{SIGNIFICANT_DIGITS}g}"
    return value


def _digest(outputs: dict) -> str:
    return hashlib.sha256(json.dumps(outputs, sort_keys=True).encode()).hexdigest()


def _normalised(report: dict, bags: dict) -> dict:
    """Report without its timings section, bag paths replaced by their names."""
    text = json.dumps(replay_report.without_timings(report), sort_keys=True)
    for name, path in bags.items():
        text = text.replace(str(path), name)
    return _rounded(json.loads(text))


def _csv_rows(path: Path, bags: dict) -> list:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        for column in TIMING_COLUMNS:
            row.pop(column, None)
        for name, bag in bags.items():
            row["bag"] = row["bag"].replace(str(bag), name)
    return _rounded(rows)


@pytest.fixture(scope="module")
def reference_bags(tmp_path_factory) -> tuple[dict, Path]:
    root = tmp_path_factory.mktemp("reference")
    faults = make_bag.BagFaults(gaps=(("/odometry", 4.0, 4.6),), time_jump=(11.0, -3.0))
    drive = write_bag(root / "drive", "curved_drive", duration_s=16.0, faults=faults)
    write_bag(root / "circle", "circle_8mps", duration_s=9.0, storage="sqlite3")
    # Compressed cameras where the parameters name raw ones: the bag is an error (exit 2).
    write_bag(root / "jpeg", "circle_8mps", duration_s=3.0, encoding="jpeg")
    params = root / "params.yaml"
    make_bag.write_parameter_file(params, make_bag.planner_parameters_for(drive, rate_hz=2.0))
    return {"drive": root / "drive", "circle": root / "circle", "jpeg": root / "jpeg"}, params


def test_replay_outputs_equal_the_recorded_reference(reference_bags, tmp_path):
    bags, params = reference_bags
    runs = {
        "both": ["--params", str(params), "-o", str(tmp_path / "both"), "--no-plot",
                 "--quiet", str(bags["drive"]), str(bags["circle"])],
        "golden_same": ["--params", str(params), "-o", str(tmp_path / "same"), "--no-plot",
                        "--no-bag", "--quiet", str(bags["drive"]), str(bags["circle"]),
                        "--golden", str(tmp_path / "both" / "report.json")],
        "golden_other_rate": ["--params", str(params), "-o", str(tmp_path / "rate"),
                              "--no-plot", "--no-bag", "--quiet", "--rate", "4",
                              str(bags["drive"]), str(bags["circle"]),
                              "--golden", str(tmp_path / "both" / "report.json")],
        "wrong_transport": ["--params", str(params), "-o", str(tmp_path / "jpeg"),
                            "--no-plot", "--quiet", str(bags["jpeg"])],
    }
    have = {}
    for name, argv in runs.items():
        code = replay.main(argv)
        out = Path(argv[argv.index("-o") + 1])
        have[name] = {"exit_code": code,
                      "report": _normalised(json.loads((out / "report.json").read_text()),
                                            bags),
                      "csv": _csv_rows(out / "ticks.csv", bags)}
    for name in runs:
        if name not in FULL_RUNS:
            have[name] = {"exit_code": have[name]["exit_code"],
                          "sha256": _digest(have[name])}
    have["output_bag_files"] = sorted(p.name for p in (tmp_path / "both").iterdir())
    if UPDATE:
        REFERENCE.write_text(json.dumps(have, sort_keys=True, separators=(",", ":")) + "\n")
    want = json.loads(REFERENCE.read_text())
    assert [have[k]["exit_code"] for k in runs] == [want[k]["exit_code"] for k in runs]
    assert have["output_bag_files"] == want["output_bag_files"]
    for name in FULL_RUNS:
        assert have[name]["csv"] == want[name]["csv"], name
        assert have[name]["report"] == want[name]["report"], name
    for name in set(runs) - set(FULL_RUNS):
        assert have[name]["sha256"] == want[name]["sha256"], name
