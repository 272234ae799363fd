"""Every closed-loop process exits within 2 s of SIGINT: N consecutive runs under CPU load.

    .venv/bin/python bench/stress_shutdown.py [-n 50] [--hogs 2] [--max-minutes 60] [-o DIR]

Each run starts the processes of the closed-loop tool (testbed/closed_loop_stack.sim_stack:
carla_sim, the planner, controller_node) as `alpamayo-closed-loop` does, with the planner
alternating between the route oracle and planner_node (constant velocity), and sends SIGINT
to every process group the way the tool stops a run, alternating between moments (--moments):
  end  the simulator ends by itself after --duration s of sim time (exit status 0), then
       the planner and the controller get SIGINT (the tool at the end of every run);
  mid  every process gets SIGINT at a random wall time 0-3 s after all of them logged
       their first line (rclpy is up: discovery, the start-up handshake or the first
       steps; a signal during the imports before it is issue 15's item 8e, not this);
  early  every process gets SIGINT 0.3-1.5 s (wall) after carla_sim logged its start line:
       the simulator's start-up phase (publishing /clock while it waits for its
       subscribers and the first command) or its first steps; the planner and the
       controller may still be starting.
  tracking  every process gets SIGINT as soon as the controller logged "tracking plan"
       (test_closed_loop_shutdown.py's moment: the loop has just started stepping).
--moments picks the cycle (default "end,mid"; e.g. "early" for early runs only).
A run is clean when every process exits with status 0 within --bound s (2 s) of its
SIGINT. A process still running --hang-after s after its SIGINT is first dumped (py-spy
if installed, else gdb's C stacks) into DIR/run_<k>/, then killed. --hogs busy-looping
processes keep the cores busy for the whole run (default one per core); they end with the
script. Prints one line per run and the count; exit 0 when every run was clean. Not part
of CI (docs/closed_loop.md has the measured counts and the command).
"""
from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from alpamayo_ros.tools.closed_loop import Processes
from alpamayo_ros.testbed.closed_loop_stack import command_line, sim_stack

REPO = Path(__file__).resolve().parents[1]


def dump_stacks(out: Path, name: str, proc: subprocess.Popen) -> None:
    """Python stacks (py-spy) or C stacks (gdb) of a process that did not exit."""
    py_spy = (shutil.which("py-spy")
              or shutil.which("py-spy", path=str(Path(sys.executable).parent)))
    if py_spy:
        cmd = [py_spy, "dump", "--native", "--pid", str(proc.pid)]
    else:
        cmd = ["gdb", "-p", str(proc.pid), "-batch", "-ex", "thread apply all bt"]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        text = done.stdout + (f"\n(stderr)\n{done.stderr}" if done.returncode else "")
    except (OSError, subprocess.TimeoutExpired) as exc:
        text = f"no stacks: {exc}"
    (out / f"{name}.stacks.txt").write_text(text)


def _logged(path: Path) -> bool:
    """The node has logged through rclpy (so rclpy and its signal handling are up)."""
    try:
        return re.search(r"^\[(INFO|WARN)\]", path.read_text(errors="replace"), re.M) is not None
    except OSError:
        return False


def _shutdown_s(path: Path) -> str:
    """The node's own "shut down in X s" (spin.run_node), or "-"."""
    try:
        found = re.findall(r"shut down in ([0-9.]+) s", path.read_text(errors="replace"))
    except OSError:
        return "-"
    return f"{found[-1]}s" if found else "-"


def one_run(k: int, out: Path, args: argparse.Namespace, env: dict, rng: random.Random
            ) -> tuple[bool, str]:
    planner = ("route_oracle", "constant_velocity")[k % 2]
    moments = args.moments.split(",")
    moment = moments[((k - 1) // 2) % len(moments)]
    run_dir = out / f"run_{k}"
    specs = sim_stack(planner, sim={"duration": args.duration if moment == "end" else 0.0,
                                    "initial_speed": 10.0},
                      controller_extra={"diagnostics.period": 0.5})
    procs = Processes(run_dir, env)
    for spec in specs:
        procs.start(spec.node_name, command_line(spec))
    simulator = procs.procs[0][1]
    if moment == "end":
        deadline = time.monotonic() + 300.0
        while simulator.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
    elif moment == "tracking":
        deadline = time.monotonic() + 120.0
        controller_log = run_dir / f"{specs[-1].node_name}.log"
        while "tracking plan" not in (controller_log.read_text(errors="replace")
                                      if controller_log.exists() else ""):
            if time.monotonic() > deadline or procs.first_failure():
                break
            time.sleep(0.02)
    elif moment == "early":
        deadline = time.monotonic() + 120.0
        while not _logged(run_dir / f"{specs[0].node_name}.log"):
            if time.monotonic() > deadline or procs.first_failure():
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.3, 1.5))
    else:
        deadline = time.monotonic() + 120.0
        while not all(_logged(run_dir / f"{s.node_name}.log") for s in specs):
            if time.monotonic() > deadline or procs.first_failure():
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 3.0))
    early_dump = None
    if args.dump_after > 0:  # stacks of a slow shutdown while it is still running
        def dump_slow() -> None:
            for name, proc in procs.procs:
                if proc.poll() is None:
                    dump_stacks(run_dir, f"{name}.after_{args.dump_after:g}s", proc)
        early_dump = threading.Timer(args.dump_after, dump_slow)
        early_dump.start()
    codes = procs.stop(timeout_s=args.hang_after,
                       on_hang=lambda name, proc: dump_stacks(run_dir, name, proc))
    if early_dump is not None:
        early_dump.cancel()
        early_dump.join()
    exit_s = procs.exit_s
    slow = {n: round(s, 2) for n, s in exit_s.items() if s > args.bound}
    bad = {n: c for n, c in codes.items() if c != 0}
    clean = not slow and not bad
    times = " ".join(f"{n}={s:.2f}s" for n, s in exit_s.items())
    inside = " ".join(f"{s.node_name}={_shutdown_s(run_dir / f'{s.node_name}.log')}"
                      for s in specs)
    detail = (f"{planner} {moment}: exit codes {codes}; SIGINT->exit {times}; "
              f"run_node's own shutdown {inside}")
    if slow:
        detail += f"; over {args.bound:g} s: {slow}"
    dumped = sorted(f.name for f in run_dir.glob("*.stacks.txt"))
    if dumped:
        detail += f"; stacks: {dumped}"
    if clean and not args.keep and not dumped:
        shutil.rmtree(run_dir, ignore_errors=True)
    return clean, detail


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-n", "--runs", type=int, default=50)
    p.add_argument("--hogs", type=int, default=os.cpu_count() or 2,
                   help="busy-looping processes (default: one per core)")
    p.add_argument("--duration", type=float, default=2.0, help="sim seconds of an 'end' run")
    p.add_argument("--bound", type=float, default=2.0, help="SIGINT -> exit bound [s]")
    p.add_argument("--hang-after", type=float, default=15.0,
                   help="seconds after SIGINT before a process is dumped and killed")
    p.add_argument("--moments", default="end,mid",
                   help="comma-separated cycle of SIGINT moments: end, mid, early, tracking")
    p.add_argument("--dump-after", type=float, default=0.0,
                   help="also dump the stacks of a process still running this many seconds "
                        "after its SIGINT (0: only at --hang-after)")
    p.add_argument("--max-minutes", type=float, default=90.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--keep", action="store_true", help="keep the logs of clean runs too")
    p.add_argument("-o", "--output", type=Path, default=None, help="log directory")
    args = p.parse_args()
    out = args.output or Path(tempfile.mkdtemp(prefix="stress_shutdown."))
    out.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    env.setdefault("FASTDDS_DEFAULT_PROFILES_FILE",
                   str(REPO / "config" / "fastdds_large_messages.xml"))
    rng = random.Random(args.seed)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # Started as a background job: give the processes SIGINT as in a foreground run.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.hogs)]
    print(f"[stress] {len(hogs)} CPU hog(s); {args.runs} runs; logs in {out}", flush=True)
    clean_runs = ran = 0
    deadline = time.monotonic() + args.max_minutes * 60.0
    try:
        for k in range(1, args.runs + 1):
            if time.monotonic() > deadline:
                print(f"[stress] stopping: {args.max_minutes:g} min reached")
                break
            clean, detail = one_run(k, out, args, env, rng)
            ran += 1
            clean_runs += clean
            load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
            print(f"[stress] run {k}: {'clean' if clean else 'NOT CLEAN'}: {detail} "
                  f"(load {load})", flush=True)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    print(f"[stress] {clean_runs} of {ran} runs clean ({len(hogs)} hogs; logs in {out})")
    return 0 if ran and clean_runs == ran else 1


if __name__ == "__main__":
    sys.exit(main())
