"""The model benchmarks' R1 / 1.5 / 1.5 + nav / 1.5 + guidance rows, run small on the CPU:
bench/bench_model_cpu.py --families (fast and eager side by side, with the ratio) and
bench/bench_model_gpu.py --families on the tiny geometry (what bench/gpu_check.sh runs at
the real geometry when a device is lent)."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
ROW_NAMES = ["R1", "1.5", "1.5 + nav", "1.5 + guidance"]


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_cpu_benchmark_reports_the_family_rows_on_both_paths(tmp_path, capsys):
    bench = _load("bench_model_cpu")
    out = tmp_path / "families.json"
    assert bench.main(["--families", "--runs", "1", "--samples", "1", "--height", "64",
                       "--width", "96", "--max-coc-tokens", "4", "--steps", "2",
                       "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["paths"] == ["fast", "eager"]
    rows = report["families"]
    assert [r["name"] for r in rows] == ROW_NAMES
    for row in rows:
        assert row["fast"]["served_by"] == "fast" and row["eager"]["served_by"] == "eager"
        assert row["eager_over_fast"] == pytest.approx(
            row["eager"]["wall_median_s"] / row["fast"]["wall_median_s"])
    # Only the guidance row ran the guided row state (the fast path, not a fallback).
    assert [r["fast"]["guided_state"] for r in rows] == [False, False, False, True]
    table = capsys.readouterr().out
    assert "| row | samples | fast predict | eager predict |" in table
    assert all(f"| {name} | 1 |" in table for name in ROW_NAMES)


@pytest.mark.slow
def test_gpu_benchmark_family_rows_run_on_the_tiny_geometry(tmp_path):
    bench = _load("bench_model_gpu")
    out = tmp_path / "families.json"
    assert bench.main(["--geometry", "tiny", "--device", "cpu", "--dtype", "float32",
                       "--families", "--samples", "1", "--coc", "4", "--cycles", "1",
                       "--reference-cycles", "1", "--warmup", "0", "--frame-size", "64", "96",
                       "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    rows = report["families"]
    assert [r["name"] for r in rows] == ROW_NAMES
    lengths = [r["prompt_tokens"] for r in rows]
    assert lengths[0] < lengths[1] < lengths[2] == lengths[3]  # labels, then the route
    for row in rows:
        assert row["same_decode"] and row["first_step_velocity_max_diff"] < 1e-4
        assert row["fast"]["path"] == "fast" and row["eager"]["path"] == "eager"
        assert row["eager_over_fast_p50"] > 0
    assert [r["nav_guidance_scale"] for r in rows] == [0.0, 0.0, 0.0, 1.5]
    states = report["fast_path_report"]["states"]
    assert any(s["guided"] for s in states) and report["capture_failures"] == []


def test_gpu_check_script_parses_and_runs_the_family_rows():
    subprocess.run(["bash", "-n", str(REPO / "bench" / "gpu_check.sh")], check=True)
    script = (REPO / "bench" / "gpu_check.sh").read_text()
    assert "bench/bench_model_gpu.py --families" in script
    bench = _load("bench_model_gpu")
    with pytest.raises(SystemExit) as exc:
        bench.main(["--families", "--nav-tokens", "x"])
    assert exc.value.code == 2  # argparse refuses, so the flags exist and are typed
    # Without CUDA the script refuses the real device with its hint (exit 2), after
    # parsing the family flags.
    import torch
    if not torch.cuda.is_available():
        assert bench.main(["--families", "--nav-tokens", "8", "--samples", "1"]) == 2
