"""CPU benchmark of AlpamayoRuntime.predict on the tiny checkpoint.

Reports the per-stage timing breakdown (median over --runs after one warm-up) for each
sample count, and, with --compare-generate, our prefill + KV-cache decode against
transformers' ``generate()`` producing the same number of tokens, measured side by side.

    PYTHONPATH=. .venv/bin/python bench/bench_model_cpu.py --runs 5 --samples 1 6

``--path eager`` measures the eager reference path instead of the fast path (the runtime's
default); every frame is new in every run here (no frame keys, so no vision reuse).

``--families`` measures, in one run and on tiny checkpoints of both families written with
the same seed, Alpamayo R1, Alpamayo 1.5 (camera names in the prompt), 1.5 with a
navigation instruction, and 1.5 with the instruction and classifier-free guidance
(model.nav_guidance_scale 1.5) side by side, per sample count, on the fast and the eager
path (``--paths``; runs of the two paths alternate, so load drifts hit both alike), with
the ratio eager / fast of the median predict time.

    PYTHONPATH=. .venv/bin/python bench/bench_model_cpu.py --families --runs 3 --samples 1
bench/bench_model_gpu.py --geometry tiny --device cpu compares the paths side by side,
warm ticks included.
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

STAGES = ("preprocess", "vision_prefill", "coc_decode", "diffusion", "postprocess")


def synthetic_input(height: int, width: int, speed: float = 8.0):
    from alpamayo_ros.core.types import ModelInput

    yy, xx = np.mgrid[0:height, 0:width]
    frames = np.stack([np.stack([(xx * (k + 1)) % 256, (yy * 2) % 256, (xx + yy + 9 * k) % 256],
                                axis=-1) for k in range(16)]).astype(np.uint8)
    t = np.linspace(-1.5, 0.0, 16)
    xyz = np.stack([speed * t, np.zeros(16), np.zeros(16)], axis=1)
    return ModelInput(frames=frames, history_xyz=xyz, history_rot=np.tile(np.eye(3), (16, 1, 1)))


def predict_runs(runtime, model_input, samples: int, runs: int, max_coc_tokens: int,
                 steps: int, nav_guidance_scale: float = 0.0):
    """A generator of (wall seconds, ModelOutput), one per next(); run 0 is the warm-up
    (yielded too: callers drop it)."""
    from alpamayo_ros.core.types import InferenceOptions

    for run in range(runs + 1):
        options = InferenceOptions(num_samples=samples, max_coc_tokens=max_coc_tokens,
                                   diffusion_steps=steps, seed=run,
                                   nav_guidance_scale=nav_guidance_scale)
        start = time.perf_counter()
        out = runtime.predict(model_input, options)
        yield time.perf_counter() - start, out


def bench_predict(runtime, model_input, samples: int, runs: int, max_coc_tokens: int,
                  steps: int, nav_guidance_scale: float = 0.0) -> dict:
    results = list(predict_runs(runtime, model_input, samples, runs, max_coc_tokens, steps,
                                nav_guidance_scale))[1:]
    return summarize(samples, runs, results)


def summarize(samples: int, runs: int, results: list) -> dict:
    """Medians of (wall, ModelOutput) pairs: the predict row of one configuration."""
    row = {"samples": samples, "runs": runs,
           "wall_median_s": statistics.median(w for w, _ in results)}
    for stage in STAGES:
        row[stage + "_median_s"] = statistics.median(getattr(o.timings, stage) for _, o in results)
    row["coc_tokens_mean"] = float(np.mean([s.coc_token_count for _, o in results
                                            for s in o.samples]))
    return row


def bench_decode_vs_generate(runtime, model_input, tokens: int, rows: int, repeats: int) -> dict:
    """Prefill + `tokens` decoded tokens: our loop vs transformers generate(), same work."""
    from alpamayo_ros.model import generation

    net = runtime.network
    ids = runtime.token_ids
    with torch.inference_mode():
        prepared = runtime.prepare_inputs(model_input)
        settings = generation.DecodeSettings(ids.traj_future_start, ids.traj_token_start,
                                             ids.traj_token_end, tokens, sample=False)

        def ours():
            cache = generation.PreallocatedKVCache(net.num_layers,
                                                   prepared.input_ids.shape[1] + tokens, rows)
            result = generation.prefill(net, prepared.input_ids, prepared.pixel_values,
                                        prepared.image_grid_thw, cache)
            # Greedy on the tiny model never emits <|traj_future_start|>: exactly `tokens`.
            generation.decode_coc(net, cache, result, settings, rows)

        def theirs():
            net.vlm.generate(input_ids=prepared.input_ids,
                             attention_mask=torch.ones_like(prepared.input_ids),
                             pixel_values=prepared.pixel_values,
                             image_grid_thw=prepared.image_grid_thw, max_new_tokens=tokens,
                             min_new_tokens=tokens, do_sample=rows > 1, top_p=0.98,
                             temperature=0.6, top_k=None, num_return_sequences=rows)

        times = {"ours": [], "generate": []}
        for _ in range(repeats + 1):
            for name, fn in (("ours", ours), ("generate", theirs)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
    ours_s = statistics.median(times["ours"][1:])
    theirs_s = statistics.median(times["generate"][1:])
    return {"tokens": tokens, "rows": rows, "ours_median_s": ours_s,
            "generate_median_s": theirs_s, "speedup": theirs_s / ours_s}


# The --families rows: (name, family, camera names, navigation text, guidance scale).
FAMILY_ROWS = (
    ("R1", "r1", False, None, 0.0),
    ("1.5", "1.5", True, None, 0.0),
    ("1.5 + nav", "1.5", True, "Turn left in 40m", 0.0),
    ("1.5 + guidance", "1.5", True, "Turn left in 40m", 1.5),
)


def bench_families(args) -> list:
    """The FAMILY_ROWS side by side on each of ``args.paths`` (see the module docstring).

    One runtime per family and path, loaded from the same checkpoint; the paths' runs of a
    row alternate. Each row records the path that served it (the runtime's
    inference_path(): a fast path that fell back at warm-up would show "eager") and, for
    the fast path, whether the guided row state ran (one expert batch of 2N rows)."""
    import dataclasses

    from alpamayo_ros.core.types import DEFAULT_CAMERA_INDICES
    from alpamayo_ros.model.runtime import AlpamayoRuntime
    from alpamayo_ros.model.tiny_checkpoint import write_tiny_checkpoint

    root = Path(tempfile.mkdtemp(prefix="alpamayo_tiny_families_"))
    checkpoints = {family: write_tiny_checkpoint(root / family, seed=0, family=family)
                   for family in ("r1", "1.5")}
    runtimes = {(family, path): AlpamayoRuntime.from_pretrained(
        checkpoints[family], fast_path=path == "fast")
        for family in checkpoints for path in args.paths}
    base = synthetic_input(args.height, args.width)
    rows = []
    for samples in args.samples:
        for name, family, named, nav_text, scale in FAMILY_ROWS:
            model_input = dataclasses.replace(
                base, camera_indices=DEFAULT_CAMERA_INDICES if named else None,
                navigation_text=nav_text)
            runs = {path: predict_runs(runtimes[(family, path)], model_input, samples,
                                       args.runs, args.max_coc_tokens, args.steps, scale)
                    for path in args.paths}
            results = {path: [] for path in args.paths}
            for run in range(args.runs + 1):
                for path in args.paths:
                    result = next(runs[path])
                    if run:
                        results[path].append(result)
            row = {"name": name, "samples": samples, "nav_guidance_scale": scale}
            for path in args.paths:
                runtime = runtimes[(family, path)]
                entry = summarize(samples, args.runs, results[path])
                entry["served_by"] = runtime.inference_path().name
                if path == "fast":
                    entry["guided_state"] = any(
                        s.get("guided") for s in runtime.fast_path_report()["states"])
                row[path] = entry
                stages = "  ".join(f"{s}={entry[s + '_median_s'] * 1e3:.0f}ms" for s in STAGES)
                print(f"{name:<15} {path:<5} samples={samples}: predict "
                      f"{entry['wall_median_s'] * 1e3:.0f} ms  {stages}", flush=True)
            if "fast" in row and "eager" in row:
                row["eager_over_fast"] = (row["eager"]["wall_median_s"]
                                          / row["fast"]["wall_median_s"])
                print(f"{name:<15} samples={samples}: eager / fast = "
                      f"{row['eager_over_fast']:.2f}x", flush=True)
            rows.append(row)
    print_family_table(rows, args.paths)
    return rows


def print_family_table(rows: list, paths) -> None:
    """The --families rows as one markdown table (predict medians, ratio)."""
    head = ["row", "samples"] + [f"{p} predict" for p in paths]
    stage_cols = [(p, s) for p in paths for s in ("vision_prefill", "coc_decode", "diffusion")]
    head += [f"{p} {s}" for p, s in stage_cols]
    if "fast" in paths and "eager" in paths:
        head.append("eager / fast")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for row in rows:
        cells = [row["name"], str(row["samples"])]
        cells += [f"{row[p]['wall_median_s'] * 1e3:.0f} ms" for p in paths]
        cells += [f"{row[p][s + '_median_s'] * 1e3:.0f} ms" for p, s in stage_cols]
        if "eager_over_fast" in row:
            cells.append(f"{row['eager_over_fast']:.2f}x")
        print("| " + " | ".join(cells) + " |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="checkpoint dir (default: write a tiny one to a temp dir)")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 6])
    parser.add_argument("--height", type=int, default=320)
    parser.add_argument("--width", type=int, default=576)
    parser.add_argument("--max-coc-tokens", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--compare-generate", type=int, default=0, metavar="TOKENS",
                        help="also time our decode vs generate() for this many tokens")
    parser.add_argument("--path", choices=["fast", "eager"], default="fast",
                        help="the runtime's inference path")
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--families", action="store_true",
                        help="R1, 1.5, 1.5 + nav, 1.5 + guidance side by side (tiny)")
    parser.add_argument("--paths", nargs="+", choices=["fast", "eager"],
                        default=["fast", "eager"],
                        help="with --families: the paths measured side by side")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    if args.families:
        rows = bench_families(args)
        if args.json:
            args.json.write_text(json.dumps({"threads": args.threads, "paths": args.paths,
                                             "frame_size": [args.height, args.width],
                                             "max_coc_tokens": args.max_coc_tokens,
                                             "steps": args.steps, "runs": args.runs,
                                             "families": rows}, indent=2))
        return 0
    from alpamayo_ros.model.runtime import AlpamayoRuntime
    from alpamayo_ros.model.tiny_checkpoint import write_tiny_checkpoint

    checkpoint = args.checkpoint
    if checkpoint is None:
        checkpoint = write_tiny_checkpoint(tempfile.mkdtemp(prefix="alpamayo_tiny_"), seed=0)
    start = time.perf_counter()
    runtime = AlpamayoRuntime.from_pretrained(checkpoint, fast_path=args.path == "fast")
    load_s = time.perf_counter() - start
    model_input = synthetic_input(args.height, args.width)
    report = {"describe": runtime.describe(), "load_s": load_s, "threads": args.threads,
              "path": args.path,
              "frame_size": [args.height, args.width], "predict": []}
    print(f"loaded {checkpoint} in {load_s:.2f} s; {args.height}x{args.width} frames, "
          f"{args.threads} thread(s), {args.path} path")
    for samples in args.samples:
        row = bench_predict(runtime, model_input, samples, args.runs, args.max_coc_tokens,
                            args.steps)
        report["predict"].append(row)
        stages = "  ".join(f"{s}={row[s + '_median_s'] * 1e3:.0f}ms" for s in STAGES)
        print(f"samples={samples}: predict {row['wall_median_s'] * 1e3:.0f} ms (median of "
              f"{args.runs}; mean CoC tokens {row['coc_tokens_mean']:.1f})  {stages}")
    if args.compare_generate:
        for rows in args.samples:
            cmp = bench_decode_vs_generate(runtime, model_input, args.compare_generate, rows,
                                           max(1, args.runs // 2))
            report.setdefault("decode_vs_generate", []).append(cmp)
            print(f"prefill+{cmp['tokens']} tokens x {rows} rows: ours "
                  f"{cmp['ours_median_s'] * 1e3:.0f} ms, generate() "
                  f"{cmp['generate_median_s'] * 1e3:.0f} ms, speedup {cmp['speedup']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
