"""Per-tick overhead of PlannerCore excluding the model (selection, history, output building).

Four cameras (raw rgb8 or JPEG) at 10 or 30 Hz with phase offsets, odometry at 50 Hz,
ticks at 10 Hz driven with stepped time, as the replay tool does. The model is the
numpy ConstantVelocityModel; its own time is excluded. Reported per configuration:
  overhead  = input preparation - decode + output building (median / p99) [ms]
              (selection, staleness gates, history interpolation, cache look-ups, checks;
              the 16 cached frames reach the model as a tuple, nothing is copied)
  select / history / output = medians of those parts of the overhead [ms]
  decode    = time spent decoding frames missing from the cache, per tick [ms]
  decodes   = frames decoded per tick after the first tick (target: 4 at 10 Hz ticks)
  insert    = cost of one add_image / add_odometry call [us]
Target: overhead < 5 ms per tick, <= 4 new decodes per tick at 10 Hz ticks.

Second table, in real time (frames and odometry inserted at their stamps on the wall
clock, ticks at 10 Hz, JPEG): the time from the tick to the model start
(PlannerTiming.tick_to_model_start) side by side for three ways to decode, in one run:
  at tick   decode_threads 0: the 4 new frames decoded one after another in the tick
  parallel  decode_threads 4, decode_ahead off: decoded in the tick on 4 threads
  ahead     decode_threads 4, decode_ahead on: decoded as they arrive, before the tick
with the frames each tick still had to decode (misses) and all decodes per tick (work).

Run: cd /work/main && OMP_NUM_THREADS=1 PYTHONPATH=. .venv/bin/python bench/bench_core_overhead.py
     [--ticks 30] [--sizes 1080x1920,540x960] [--realtime-ticks 20] [--tick-phase 0.05]
     [--skip-stepped]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import simplejpeg

from alpamayo_ros.core.config import PlannerConfig
from alpamayo_ros.core.image_decode import EncodedImage
from alpamayo_ros.core.kinematic_model import ConstantVelocityModel
from alpamayo_ros.core.odometry import OdometrySample
from alpamayo_ros.core.planner_core import PlannerCore, PlanStatus

NS = 1_000_000_000
EPOCH_NS = 1_700_000_000 * NS


def synthetic_rgb(height: int, width: int, seed: int) -> np.ndarray:
    """A smooth image with some texture (so JPEG sizes are realistic)."""
    rng = np.random.default_rng(seed)
    y = np.linspace(0, 1, height)[:, None]
    x = np.linspace(0, 1, width)[None, :]
    base = np.stack([255 * x * np.ones_like(y), 255 * y * np.ones_like(x),
                     128 + 60 * np.sin(20 * x + 10 * y)], axis=2)
    noise = rng.normal(0, 8, (height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def make_images(encoding: str, height: int, width: int) -> list:
    """One EncodedImage per camera; every frame of a camera reuses its bytes (memory), the
    core still decodes each (camera, stamp) separately."""
    images = []
    for cam in range(4):
        rgb = synthetic_rgb(height, width, cam)
        if encoding == "jpeg":
            data = simplejpeg.encode_jpeg(rgb, quality=90, colorspace="RGB")
            images.append(EncodedImage("jpeg", height, width, 0, data))
        else:
            images.append(EncodedImage("rgb8", height, width, width * 3, rgb.tobytes()))
    return images


def events(camera_rate: float, duration: float) -> list:
    """(stamp_ns, kind, slot) sorted: kind 0 camera, 1 odometry (50 Hz)."""
    out = []
    for slot, phase in enumerate((0.0, 0.011, 0.023, 0.037)):
        k = 0
        while phase + k / camera_rate <= duration:
            out.append((EPOCH_NS + int(round((phase + k / camera_rate) * NS)), 0, slot))
            k += 1
    for k in range(int(duration * 50) + 1):
        out.append((EPOCH_NS + k * NS // 50, 1, -1))
    out.sort()
    return out


def run_config(encoding: str, camera_rate: float, height: int, width: int, ticks: int) -> dict:
    # Stepped time: decoding on the tick's thread, one frame after another (the cost).
    core = PlannerCore(PlannerConfig(decode_threads=0, decode_ahead=False),
                       ConstantVelocityModel())
    images = make_images(encoding, height, width)
    warmup = 2.0
    stream = events(camera_rate, warmup + 0.1 * ticks + 0.2)
    next_event = 0
    insert_seconds, inserts = 0.0, 0
    rows = []
    for k in range(ticks + 1):
        now_s = warmup + 0.1 * k + 0.004
        limit = EPOCH_NS + int(round(now_s * NS))
        while next_event < len(stream) and stream[next_event][0] <= limit:
            stamp, kind, slot = stream[next_event]
            start = time.perf_counter()
            if kind == 0:
                core.add_image(slot, stamp, images[slot])
            else:
                t = (stamp - EPOCH_NS) / NS
                yaw = 0.16 * t
                core.add_odometry(OdometrySample.from_pose(
                    stamp, (50 * np.sin(yaw), 50 * (1 - np.cos(yaw)), 0.0),
                    (0.0, 0.0, np.sin(yaw / 2), np.cos(yaw / 2)), "odom", "base_link"))
            insert_seconds += time.perf_counter() - start
            inserts += 1
            next_event += 1
        result = core.tick(limit)
        if result.status != PlanStatus.OK:
            raise RuntimeError(f"tick {k} not ok: {result.reason}")
        tm = result.timings
        # Overhead: everything but the model and the decoding.
        overhead = tm.input_preparation - tm.decode + tm.output_building
        rows.append((overhead, tm.decode, result.decodes, tm.selection, tm.history,
                     tm.output_building))
    steady = np.array(rows[1:])  # the first tick decodes all 16 frames
    ms = 1e3
    return {
        "config": f"{encoding:4s} {camera_rate:4.0f} Hz {height}x{width}",
        "overhead_med": np.median(steady[:, 0]) * ms,
        "overhead_p99": np.percentile(steady[:, 0], 99) * ms,
        "selection_med": np.median(steady[:, 3]) * ms,
        "history_med": np.median(steady[:, 4]) * ms,
        "output_med": np.median(steady[:, 5]) * ms,
        "decode_med": np.median(steady[:, 1]) * ms,
        "decode_first": rows[0][1] * ms,
        "decodes_max": int(steady[:, 2].max()),
        "decodes_mean": float(steady[:, 2].mean()),
        "insert_us": insert_seconds / max(inserts, 1) * 1e6,
    }


DECODE_MODES = (("at tick", 0, False), ("parallel", 4, False), ("ahead", 4, True))


def run_realtime(camera_rate: float, height: int, width: int, ticks: int, threads: int,
                 ahead: bool, tick_phase: float) -> dict:
    """Feed JPEG frames and odometry at their stamps on the wall clock; tick at 10 Hz,
    tick_phase [s] after a frame of camera 0."""
    config = PlannerConfig(decode_threads=threads, decode_ahead=ahead)
    core = PlannerCore(config, ConstantVelocityModel())
    images = make_images("jpeg", height, width)
    warmup = 1.7
    stream = [(stamp, kind, slot) for stamp, kind, slot in
              events(camera_rate, warmup + 0.1 * ticks + 0.2)]
    stream += [(EPOCH_NS + int(round((warmup + 0.1 * k + tick_phase) * NS)), 2, -1)
               for k in range(ticks + 1)]
    stream.sort()
    wall0 = time.perf_counter()
    rows = []
    for stamp, kind, slot in stream:
        delay = (stamp - EPOCH_NS) / NS - (time.perf_counter() - wall0)
        if delay > 0:
            time.sleep(delay)
        if kind == 0:
            core.add_image(slot, stamp, images[slot], time.perf_counter())
        elif kind == 1:
            t = (stamp - EPOCH_NS) / NS
            yaw = 0.16 * t
            core.add_odometry(OdometrySample.from_pose(
                stamp, (50 * np.sin(yaw), 50 * (1 - np.cos(yaw)), 0.0),
                (0.0, 0.0, np.sin(yaw / 2), np.cos(yaw / 2)), "odom", "base_link"))
        else:
            decodes_before = core.counters().decodes
            result = core.tick(stamp)
            if result.status != PlanStatus.OK:
                raise RuntimeError(f"tick at {stamp} not ok: {result.reason}")
            rows.append((result.timings.tick_to_model_start, result.decodes,
                         core.counters().decodes - decodes_before))
    core.close()
    steady = np.array(rows[3:])  # ticks 0-1 learn the rhythm, decode at the tick
    work = (core.counters().decodes - sum(r[2] for r in rows[:3])) / len(steady)
    return {"start_med": np.median(steady[:, 0]) * 1e3,
            "start_p90": np.percentile(steady[:, 0], 90) * 1e3,
            "misses": float(steady[:, 1].mean()), "work": work}


def realtime_table(sizes: list, rates: list, ticks: int, tick_phase: float) -> None:
    print(f"\nreal time, JPEG, 10 Hz ticks {tick_phase * 1e3:.0f} ms after a frame of camera 0: "
          "tick -> model start [ms] (median / p90), frames neither decoded nor being "
          "decoded at the tick, frames decoded per tick")
    print(f"{'config':22s} " + " ".join(f"{name:>26s}" for name, _, _ in DECODE_MODES))
    for height, width in sizes:
        for rate in rates:
            cells = []
            for _, threads, ahead in DECODE_MODES:
                r = run_realtime(rate, height, width, ticks, threads, ahead, tick_phase)
                cells.append(f"{r['start_med']:6.1f} /{r['start_p90']:6.1f} "
                             f"{r['misses']:4.1f} {r['work']:5.1f}")
            print(f"{f'{rate:.0f} Hz {height}x{width}':22s} "
                  + " ".join(f"{c:>26s}" for c in cells), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ticks", type=int, default=30)
    parser.add_argument("--sizes", default="1080x1920,540x960")
    parser.add_argument("--encodings", default="rgb8,jpeg")
    parser.add_argument("--rates", default="10,30")
    parser.add_argument("--realtime-ticks", type=int, default=20)
    parser.add_argument("--tick-phase", type=float, default=0.05,
                        help="real time: ticks this long after a frame of camera 0 [s] "
                        "(camera phases 0, 11, 23, 37 ms)")
    parser.add_argument("--skip-stepped", action="store_true",
                        help="only the real-time table")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    rates = [float(r) for r in args.rates.split(",")]
    if args.skip_stepped:
        realtime_table(sizes, rates, args.realtime_ticks, args.tick_phase)
        return
    header = (f"{'config':28s} {'overhead med':>12s} {'p99':>7s} "
              f"{'select':>7s} {'history':>8s} {'output':>7s} {'decode/tick':>11s} "
              f"{'first':>7s} {'decodes':>8s} {'insert':>8s}")
    print(header)
    print(f"{'':28s} {'[ms]':>12s} {'[ms]':>7s} {'[ms]':>7s} {'[ms]':>8s} "
          f"{'[ms]':>7s} {'[ms]':>11s} {'[ms]':>7s} {'max/mean':>8s} {'[us]':>8s}")
    for height, width in sizes:
        for encoding in args.encodings.split(","):
            for rate in rates:
                r = run_config(encoding, rate, height, width, args.ticks)
                print(f"{r['config']:28s} {r['overhead_med']:12.2f} {r['overhead_p99']:7.2f} "
                      f"{r['selection_med']:7.2f} "
                      f"{r['history_med']:8.2f} {r['output_med']:7.2f} {r['decode_med']:11.1f} "
                      f"{r['decode_first']:7.1f} {r['decodes_max']:>3d}/{r['decodes_mean']:<4.1f} "
                      f"{r['insert_us']:8.1f}", flush=True)
    realtime_table(sizes, rates, args.realtime_ticks, args.tick_phase)


if __name__ == "__main__":
    main()
