#!/usr/bin/env python3
"""The planner_node executable with a slow model, for the shutdown tests.

    slow_planner_node.py --delay S [--fast-calls N] [--release-file F] [--load-delay L]
                         --ros-args ...

Runs `alpamayo_ros.ros.planner_node.main` unchanged except for the model: the backend the
parameters name (use `model.backend:=constant_velocity`), whose calls after the first N
(default 2) first sleep S wall seconds in the worker thread, like a long GPU call that
cannot be interrupted (with --release-file the sleep also ends once file F exists). Each
slow call prints "slow model call K started" and "... finished" on stdout, so a test can
time its signals against the call. --load-delay: loading the model first prints "slow
model load started" and sleeps L s in the main thread (a long checkpoint load).
Test-only: the production parameters know nothing of it.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Optional

from alpamayo_ros.ros.model_loader import load_model
from alpamayo_ros.ros.planner_node import main


class SlowModel:
    """Delegates to `inner`; calls after the first `fast_calls` sleep `delay_s` first."""

    def __init__(self, inner, delay_s: float, fast_calls: int,
                 release_file: Optional[Path] = None) -> None:
        self.inner, self.delay_s, self.fast_calls = inner, delay_s, fast_calls
        self.release_file = release_file
        self.model_id = inner.model_id
        self.calls = 0

    def predict(self, model_input, options=None, initial_noise=None):
        self.calls += 1
        call = self.calls
        if call > self.fast_calls:
            print(f"slow model call {call} started ({self.delay_s:g} s)", flush=True)
            end = time.monotonic() + self.delay_s
            while time.monotonic() < end and not (self.release_file
                                                  and self.release_file.exists()):
                time.sleep(0.01)
            print(f"slow model call {call} finished", flush=True)
        return self.inner.predict(model_input, options, initial_noise)


def run(argv: list) -> int:
    split = argv.index("--ros-args") if "--ros-args" in argv else len(argv)
    parser = argparse.ArgumentParser(prog="slow_planner_node.py")
    parser.add_argument("--delay", type=float, required=True, help="seconds per slow call")
    parser.add_argument("--fast-calls", type=int, default=2, help="calls before the slow ones")
    parser.add_argument("--release-file", type=Path, help="ends a slow call once it exists")
    parser.add_argument("--load-delay", type=float, default=0.0, help="seconds of loading")
    opts = parser.parse_args(argv[1:split])

    def loader(values):
        if opts.load_delay > 0:
            print("slow model load started", flush=True)
            time.sleep(opts.load_delay)
        model, description = load_model(values)
        return SlowModel(model, opts.delay, opts.fast_calls, opts.release_file), description

    return main([argv[0]] + argv[split:], model_loader=loader)


if __name__ == "__main__":
    sys.exit(run(sys.argv))
