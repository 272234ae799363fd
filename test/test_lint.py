"""Lint as a test: the pinned ruff (requirements-test.txt) with ruff.toml finds nothing."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ("alpamayo_ros", "test", "bench", "launch", "scripts", ".ci")


def _ruff() -> list[str]:
    local = Path(sys.executable).with_name("ruff")
    if local.is_file():
        return [str(local)]
    found = shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed: it is pinned in requirements-test.txt "
                    "(scripts/setup_env.sh installs it)")
    return [found]


def test_ruff_finds_nothing():
    existing = [p for p in PATHS if (ROOT / p).exists()]
    done = subprocess.run(_ruff() + ["check", "--output-format", "concise", *existing],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-5000:] + done.stderr[-2000:]


def test_ruff_reports_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\n")
    done = subprocess.run(_ruff() + ["check", "--config", str(ROOT / "ruff.toml"), str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "F401" in done.stdout
