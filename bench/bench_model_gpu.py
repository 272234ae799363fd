"""Benchmark of one planning cycle: the fast path against the eager path and generate().

At the real Alpamayo-R1 geometry (``--geometry real``: Qwen3-VL-8B backbone + 2.3B expert,
11.08B parameters, random weights built directly on the device, since no weights can be
downloaded; conditioned like the fixture sets' (tiny_checkpoint.fixture_style_weights), so
rounding differences stay rounding-sized instead of growing through the layers) with 16
host frames of 1080x1920 and a synthetic prompt of the real structure
(16 x 180 image tokens, 48 history tokens, ~3.0k tokens). ``--geometry tiny`` uses the
tiny checkpoint instead, so the script can be checked on a CPU.

Each cycle is one tick: preprocessing of the frames (host uint8 -> device patches), vision
encoder, prefill, CoC decode of a forced length within a larger budget (``--coc-slack``
more tokens: the forced CoC emits <|traj_future_start|> at its last token and goes on
after it, so a path that notices the stop late runs extra steps, reported as
``extra_decode_steps``), and 10 Euler steps of the flow-matching expert. Stage boundaries
are synchronised; p50 and p90 over ``--cycles`` cycles after ``--warmup`` unmeasured
ones. Paths, all in one process:

* ``fast`` (runtime's default): static KV cache, CUDA-graph decode and expert steps,
  sync-free sampling. ``tick: "warm"``: a 10 Hz tick sequence where each camera's window
  shifts by one frame, so 4 of 16 frames are new and only they are preprocessed and
  encoded (vision reuse). ``tick: "cold"``: every frame new.
* ``eager``: the reference path (generation.EagerEngine), all frames every tick.
* ``generate``: transformers' ``generate()`` for prefill + CoC (it prefills once per
  returned sequence, as the official code does), then the eager flow matching on its
  cache. Its decode_ms_per_token is (p50 generate of the CoC - p50 generate of 1 token) /
  (CoC - 1).

``--families``: instead of the runs above, the rows of the CPU benchmark's ``--families``
side by side, fast path (warm tick) and eager path with the ratio, per sample count and
the first ``--coc`` length: ``R1`` (the prompt above), ``1.5`` (each camera named and
each frame numbered: 16 more text tokens per camera), ``1.5 + nav`` (an instruction of
``--nav-tokens`` tokens in ``<|route_start|>..<|route_end|>`` after the history) and
``1.5 + guidance`` (that prompt with classifier-free guidance, weight 1.5: the unguided
context and one expert batch of 2N rows per Euler step). The network is the same for all
rows (``--geometry real``: the R1 geometry stands in for 1.5, the rows differ by prompt
and guidance); each row also has its fast-vs-eager first-Euler-step check.

Also measured: fast vs eager in the working dtype on the first Euler step's velocities for
the same noise, forced CoC and context (runtime.compare_predictions, the warm-up
self-check's figure), and with ``--attn`` several VLM attention implementations. Writes
JSON (``--json``) after every configuration, so a run cut short keeps what it has. Exits 3
when a step that should run as a CUDA graph does not (``capture_failures``).

    PYTHONPATH=. python bench/bench_model_gpu.py --json bench/results/gpu_h200_fast_path.json
    PYTHONPATH=. python bench/bench_model_gpu.py --geometry tiny --device cpu --cycles 3
    PYTHONPATH=. python bench/bench_model_gpu.py --families --samples 1 --coc 16 \
        --json bench/results/gpu_h200_families.json
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import torch

# Released geometry (model-spec section 7). Token ids are the real Qwen3-VL ones.
TEXT = dict(hidden_size=4096, num_hidden_layers=36, num_attention_heads=32,
            num_key_value_heads=8, head_dim=128, intermediate_size=12288, rope_theta=5000000,
            rms_norm_eps=1e-6, max_position_embeddings=262144, vocab_size=155697,
            rope_scaling={"rope_type": "default", "mrope_section": [24, 20, 20],
                          "mrope_interleaved": True}, tie_word_embeddings=False)
VISION = dict(depth=27, hidden_size=1152, num_heads=16, intermediate_size=4304,
              out_hidden_size=4096, patch_size=16, spatial_merge_size=2, temporal_patch_size=2,
              num_position_embeddings=2304, deepstack_visual_indexes=[8, 16, 24],
              hidden_act="gelu_pytorch_tanh", in_channels=3)
IDS = dict(image_token_id=151655, video_token_id=151656, vision_start_token_id=151652,
           vision_end_token_id=151653)
EXPERT_CFG = dict(hidden_size=2048, intermediate_size=8256, num_attention_heads=16, head_dim=128)
STEPS = 10


@dataclass(frozen=True)
class TokenSpec:
    """Token ids of the synthetic prompt and of the decode (per geometry)."""

    im_start: int
    im_end: int
    newline: int
    vision_start: int
    image_pad: int
    vision_end: int
    traj_history_start: int
    history_token: int
    traj_history_end: int
    cot_start: int
    traj_future_start: int
    traj_token_start: int
    traj_token_end: int
    filler: int
    route_start: int = -1
    route_end: int = -1


REAL_TOKENS = TokenSpec(im_start=151644, im_end=151645, newline=198,
                        vision_start=IDS["vision_start_token_id"],
                        image_pad=IDS["image_token_id"], vision_end=IDS["vision_end_token_id"],
                        traj_history_start=155674, history_token=154669 + 500,
                        traj_history_end=155676, cot_start=155677, traj_future_start=155681,
                        traj_token_start=151669, traj_token_end=155669, filler=1000,
                        # 1.5's <|route_start|> / <|route_end|> (the same special-token
                        # block: trajectory tokens end + 21 / + 23).
                        route_start=155690, route_end=155692)


@dataclass
class Setup:
    net: torch.nn.Module
    tokens: TokenSpec
    device: torch.device
    dtype: torch.dtype
    image_config: object
    description: str


def build_real(device, dtype, attn) -> Setup:
    from alpamayo_ros.model.image_processor import ImageProcessorConfig
    from alpamayo_ros.model.modeling import (NetworkSpec, _rebuild_non_persistent_buffers,
                                             build_meta_network, build_vlm_config)
    from alpamayo_ros.model.tiny_checkpoint import fixture_style_weights

    config = build_vlm_config(dict(text_config=TEXT, vision_config=VISION,
                                   tie_word_embeddings=False, **IDS),
                              TEXT["vocab_size"], attn)
    spec = NetworkSpec(vocab_size=TEXT["vocab_size"], expert_cfg=EXPERT_CFG,
                       action_in_proj_cfg=dict(hidden_size=512, num_enc_layers=2,
                                               num_fourier_feats=20, max_freq=100.0),
                       action_space_cfg={}, expert_non_causal_attention=True)
    net = build_meta_network(config, spec, dtype, "sdpa")
    net.to_empty(device=device)
    with torch.no_grad():
        for name, b in net.named_buffers():
            if name.startswith("action_space."):
                b.fill_(1.0)
            elif name.endswith("freqs"):
                b.copy_(torch.logspace(0, 2, b.shape[-1], device=device)[None])
        generator = torch.Generator(device=device).manual_seed(0)
        parameters = dict(net.named_parameters())
        for name, value in fixture_style_weights(net, generator, device):
            if name in parameters:
                parameters[name].copy_(value)
    _rebuild_non_persistent_buffers(net, device)
    return Setup(net.eval().requires_grad_(False), REAL_TOKENS, device, dtype,
                 ImageProcessorConfig(), "real (random weights)")


def build_tiny(device, dtype, attn) -> Setup:
    from alpamayo_ros.model.runtime import AlpamayoRuntime
    from alpamayo_ros.model.tiny_checkpoint import write_tiny_checkpoint

    checkpoint = write_tiny_checkpoint(tempfile.mkdtemp(prefix="alpamayo_tiny_"), seed=0)
    runtime = AlpamayoRuntime.from_pretrained(checkpoint, device=device, dtype=dtype,
                                              attn_implementation=attn)
    ids = runtime.token_ids
    tokens = TokenSpec(im_start=ids.pad, im_end=ids.im_end, newline=300,
                       vision_start=ids.vision_start, image_pad=ids.image_pad,
                       vision_end=ids.vision_end, traj_history_start=ids.traj_history_start,
                       history_token=ids.hist_token_start + 500,
                       traj_history_end=ids.traj_history_end, cot_start=ids.cot_start,
                       traj_future_start=ids.traj_future_start,
                       traj_token_start=ids.traj_token_start, traj_token_end=ids.traj_token_end,
                       filler=301, route_start=ids.route_start, route_end=ids.route_end)
    return Setup(runtime.network, tokens, device, dtype, runtime.image_config,
                 "tiny checkpoint")


def synthetic_prompt(tokens: TokenSpec, grid: torch.Tensor, merge: int,
                     camera_labels: bool = False, nav_tokens: int = 0) -> torch.Tensor:
    """(1, L) ids with the real prompt structure for 16 images of ``grid``.

    camera_labels: 1.5's camera name before each camera's first frame (4 tokens) and
    "frame i " before every frame (3 tokens); nav_tokens: an instruction of that many
    tokens in <|route_start|>..<|route_end|> after the history (1.5)."""
    per_image = int(grid[0].prod()) // (merge * merge)
    t = tokens
    ids = [t.im_start, t.filler, t.newline] + [t.filler] * 12 + [t.im_end, t.newline,
                                                                  t.im_start, t.filler, t.newline]
    for image in range(grid.shape[0]):
        if camera_labels:
            ids += [t.filler] * ((4 if image % 4 == 0 else 0) + 3)
        ids += [t.vision_start] + [t.image_pad] * per_image + [t.vision_end]
    ids += [t.traj_history_start] + [t.history_token] * 48 + [t.traj_history_end]
    if nav_tokens:
        ids += [t.route_start] + [t.filler] * nav_tokens + [t.route_end]
    ids += [t.filler] * 20 + [t.im_end, t.newline, t.im_start, t.filler, t.newline, t.cot_start]
    return torch.tensor([ids])


class FrameSource:
    """Host uint8 frames of a 10 Hz tick sequence: camera c's window at tick n holds video
    frames n..n+3, drawn from a pool of random images; keys (camera, frame index)."""

    def __init__(self, height: int, width: int, pool: int = 8, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.pool = [[rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
                      for _ in range(pool)] for _ in range(4)]

    def tick(self, n: int) -> tuple[list[np.ndarray], tuple]:
        frames, keys = [], []
        for camera in range(4):
            for f in range(4):
                index = n + f
                frames.append(self.pool[camera][index % len(self.pool[camera])])
                keys.append((camera, index))
        return frames, tuple(keys)


class StageClock:
    """Seconds per stage of one cycle, synchronising the device at each boundary."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.stages: dict[str, float] = {}
        self.start = self.begin = self._now()

    def _now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def lap(self, stage: str) -> None:
        now = self._now()
        self.stages[stage] = self.stages.get(stage, 0.0) + now - self.start
        self.start = now

    def total(self) -> float:
        return self._now() - self.begin


def percentile(values, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def forced_tokens(tokens: TokenSpec, coc: int, budget: int, device) -> torch.Tensor:
    """``coc`` tokens ending with <|traj_future_start|>, then fillers up to ``budget``."""
    return torch.tensor([tokens.filler] * (coc - 1) + [tokens.traj_future_start]
                        + [tokens.filler] * (budget - coc), device=device)


def request(setup, rows, coc, budget, steps, seed, noise, nav_guidance_scale=0.0):
    from alpamayo_ros.model.engine import Request

    return Request(rows=rows, max_new_tokens=budget, diffusion_steps=steps, seed=seed,
                   noise=noise, forced_tokens=forced_tokens(setup.tokens, coc, budget,
                                                            setup.device),
                   nav_guidance_scale=nav_guidance_scale)


@dataclass
class Guidance:
    """What a guided call adds to PreparedInputs and Request."""

    unguided_input_ids: torch.Tensor
    route_len: int
    route_start: int
    scale: float

    @classmethod
    def of(cls, tokens: TokenSpec, input_ids: torch.Tensor, scale: float) -> "Guidance":
        from alpamayo_ros.model.prompt_1_5 import remove_route_span, route_span

        start, _ = route_span(input_ids, tokens.route_start, tokens.route_end)
        unguided, length = remove_route_span(input_ids, tokens.route_start, tokens.route_end)
        return cls(unguided, length, start, scale)

    def fields(self) -> dict:
        return dict(unguided_input_ids=self.unguided_input_ids, route_len=self.route_len,
                    route_start=self.route_start)


# ------------------------------------------------------------------ one cycle per path
def cycle_fast(setup, engine, source, tick, rows, coc, budget, cold, noise, prompt,
               steps=STEPS, guidance: Optional[Guidance] = None):
    from alpamayo_ros.model.engine import PreparedInputs
    from alpamayo_ros.model.image_processor import image_grid_thw, preprocess_frames

    clock = StageClock(setup.device)
    frames, keys = source.tick(tick)
    height, width = frames[0].shape[:2]
    keys = None if cold else tuple((k, height, width) for k in keys)
    if cold:
        engine.clear_vision_cache()
    encoded = list(range(16)) if keys is None else engine.missing_frames(keys)
    pixel_values = (preprocess_frames([frames[i] for i in encoded], setup.image_config,
                                      layout="hwc", device=setup.device)[0] if encoded
                    else torch.empty(0, 1536, device=setup.device))
    grid = image_grid_thw(16, height, width, setup.image_config, setup.device)
    clock.lap("preprocess")
    input_ids, rope = prompt
    prepared = PreparedInputs(pixel_values, grid, input_ids, torch.empty(0), torch.empty(0),
                              frame_keys=keys, encoded_frames=tuple(encoded), rope=rope,
                              **(guidance.fields() if guidance else {}))
    result = engine.run(prepared, request(setup, rows, coc, budget, steps, tick, noise,
                                          guidance.scale if guidance else 0.0),
                        lap=clock.lap)
    stages = dict(clock.stages, total=clock.total())
    stages["decode_steps"] = result.decode_steps
    stages["encoded_frames"] = len(encoded)
    return stages, result


def cycle_eager(setup, engine, source, tick, rows, coc, budget, noise, input_ids,
                steps=STEPS, guidance: Optional[Guidance] = None):
    from alpamayo_ros.model.engine import PreparedInputs
    from alpamayo_ros.model.image_processor import preprocess_frames

    clock = StageClock(setup.device)
    frames, _ = source.tick(tick)
    pixel_values, grid = preprocess_frames(frames, setup.image_config, layout="hwc",
                                           device=setup.device)
    clock.lap("preprocess")
    prepared = PreparedInputs(pixel_values, grid, input_ids, torch.empty(0), torch.empty(0),
                              **(guidance.fields() if guidance else {}))
    result = engine.run(prepared, request(setup, rows, coc, budget, steps, tick, noise,
                                          guidance.scale if guidance else 0.0),
                        lap=lambda stage: clock.lap("vision_prefill" if stage == "prefill"
                                                    else stage))
    return dict(clock.stages, total=clock.total(), decode_steps=result.decode_steps), result


def cycle_generate(setup, source, tick, rows, coc, noise, input_ids, diffusion=True):
    from alpamayo_ros.model import generation
    from alpamayo_ros.model.image_processor import preprocess_frames
    from alpamayo_ros.model.modeling import official_autocast

    net = setup.net
    clock = StageClock(setup.device)
    frames, _ = source.tick(tick)
    pixel_values, grid = preprocess_frames(frames, setup.image_config, layout="hwc",
                                           device=setup.device)
    clock.lap("preprocess")
    torch.manual_seed(tick)
    with official_autocast(setup.device, setup.dtype):  # as the official generate runs
        out = net.vlm.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                               pixel_values=pixel_values.to(setup.dtype), image_grid_thw=grid,
                               max_new_tokens=coc, min_new_tokens=coc, do_sample=True,
                               num_return_sequences=rows, top_p=0.98, temperature=0.6,
                               top_k=None, pad_token_id=setup.tokens.filler,
                               return_dict_in_generate=True)
    clock.lap("generate")
    if diffusion:
        cache = out.past_key_values
        cache_len = cache.get_seq_length()
        offsets = torch.full((rows,), cache_len + 1, dtype=torch.long, device=setup.device)
        rope_deltas = int(net.vlm.model.rope_deltas.reshape(-1)[0])
        generation.sample_actions(net, cache, cache_len, offsets, rope_deltas, noise, STEPS)
        clock.lap("diffusion")
    return dict(clock.stages, total=clock.total())


# ------------------------------------------------------------------ measurement
def measure(fn, cycles: int, warmup: int, start_tick: int = 0) -> list[dict]:
    records = []
    with torch.inference_mode():
        for i in range(warmup + cycles):
            stages = fn(start_tick + i)
            if i >= warmup:
                records.append(stages)
    return records


def summarize(path: str, tick: Optional[str], rows: int, coc: int, records: list[dict],
              device, extra: Optional[dict] = None) -> dict:
    totals = [r["total"] * 1e3 for r in records]
    entry = dict(path=path, tick=tick, samples=rows, coc_tokens=coc, flow_steps=STEPS,
                 cycles=len(records), p50_total_ms=percentile(totals, 50),
                 p90_total_ms=percentile(totals, 90))
    stage_names = sorted({k for r in records for k in r} - {"total", "decode_steps",
                                                          "encoded_frames"})
    for stage in stage_names:
        values = [r[stage] * 1e3 for r in records if stage in r]
        entry[f"p50_{stage}_ms"] = percentile(values, 50)
        entry[f"p90_{stage}_ms"] = percentile(values, 90)
    if "coc_decode" in stage_names:
        entry["decode_ms_per_token"] = entry["p50_coc_decode_ms"] / coc
        entry["decode_steps"] = statistics.median(r["decode_steps"] for r in records)
        # The stop rule feeds exactly coc tokens; more steps were run past the stop.
        entry["extra_decode_steps"] = entry["decode_steps"] - coc
    if "diffusion" in stage_names:
        entry["expert_step_ms"] = entry["p50_diffusion_ms"] / STEPS
    if "encoded_frames" in records[0]:
        entry["encoded_frames"] = statistics.median(r["encoded_frames"] for r in records)
    if device.type == "cuda":
        entry["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    entry.update(extra or {})
    return entry


def versions(device) -> dict:
    import transformers

    info = dict(torch=torch.__version__, cuda=torch.version.cuda,
                transformers=transformers.__version__, python=platform.python_version(),
                flash_attn_installed=importlib.util.find_spec("flash_attn") is not None)
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    else:
        info["gpu"] = None
        info["cpu"] = platform.processor() or platform.machine()
        info["torch_threads"] = torch.get_num_threads()
    return info


def run(args) -> dict:
    from alpamayo_ros.model.cuda_graphs import OnceLog
    from alpamayo_ros.model.fast_path import FastEngine, FastPathConfig
    from alpamayo_ros.model.generation import EagerEngine
    from alpamayo_ros.model.image_processor import image_grid_thw
    from alpamayo_ros.model.runtime import compare_predictions

    device = torch.device(args.device)
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[args.dtype]
    start = time.perf_counter()
    setup = (build_real if args.geometry == "real" else build_tiny)(device, dtype, args.attn[0])
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    params = sum(p.numel() for p in setup.net.parameters())
    height, width = args.frame_size
    report = dict(benchmark="bench_model_gpu", geometry=args.geometry,
                  description=setup.description, params=params,
                  build_s=time.perf_counter() - start, dtype=args.dtype,
                  frame_size=[height, width], flow_steps=STEPS, cycles=args.cycles,
                  reference_cycles=args.reference_cycles, coc_slack=args.coc_slack,
                  warmup_cycles=args.warmup, **versions(device), runs=[], parity=[],
                  capture_failures=[], notes=[])
    print(f"{report['gpu'] or report['cpu']}: {params / 1e9:.3f}B params ({setup.description}) "
          f"built in {report['build_s']:.1f} s; torch {report['torch']}, CUDA {report['cuda']}",
          flush=True)
    source = FrameSource(height, width)
    grid = image_grid_thw(16, height, width, setup.image_config)
    input_ids = synthetic_prompt(setup.tokens, grid, setup.image_config.merge_size)
    rope = setup.net.vlm.model.get_rope_index(input_ids, grid, None)
    input_ids = input_ids.to(device)
    prompt = (input_ids, (rope[0].to(device), rope[1].to(device)))
    report["prompt_tokens"] = int(input_ids.shape[1])
    log = OnceLog()
    engine = FastEngine(setup.net, setup.tokens, device, dtype,
                        FastPathConfig(stop_check_interval=args.stop_check_interval), log)
    eager = EagerEngine(setup.net, setup.tokens, device, dtype)
    slack = args.coc_slack

    def save():
        report["fast_path_messages"] = list(log.messages)
        report["capture_failures"] = engine.capture_failures()
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(report, indent=2))

    def add(entry):
        report["runs"].append(entry)
        keys = ("path", "tick", "samples", "coc_tokens", "p50_total_ms", "p90_total_ms",
                "decode_ms_per_token", "expert_step_ms", "extra_decode_steps", "attn")
        print(json.dumps({k: (round(entry[k], 2) if isinstance(entry.get(k), float)
                              else entry.get(k)) for k in keys}), flush=True)
        save()

    def reset_peak():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)

    if args.families:
        report["families"] = []
        run_families(args, setup, engine, eager, source, grid, report, save)
        report["fast_path_report"] = engine.report()
        save()
        return report

    for attn in args.attn:
        if attn == "flash_attention_2" and not report["flash_attn_installed"]:
            report["notes"].append("flash_attention_2 skipped: flash-attn is not installed")
            continue
        if attn != setup.net.vlm.config.text_config._attn_implementation:
            # transformers' public switch; the expert keeps SDPA (additive mask), and the
            # fast path's steps keep their own attention (static_cache.with_attention).
            setup.net.vlm.set_attn_implementation(attn)
        extra = dict(attn=attn)
        capture_start = time.perf_counter()
        for rows in args.samples:  # allocation and capture, like the node's warm-up
            noise = torch.randn(rows, 64, 2, device=device)
            budget = max(args.coc) + slack
            measure(lambda n: cycle_fast(setup, engine, source, n, rows, 2, budget, True,
                                         noise, prompt)[0], 1, 0)
        report.setdefault("warmup_s", {})[attn] = time.perf_counter() - capture_start
        save()
        for rows in args.samples:
            noise = torch.randn(rows, 64, 2, device=device)
            for coc in args.coc:
                # fast vs eager: first Euler step from the same noise, CoC and context
                with torch.inference_mode():
                    _, fast = cycle_fast(setup, engine, source, 0, rows, coc, coc + slack,
                                         True, noise, prompt, steps=1)
                    _, reference = cycle_eager(setup, eager, source, 0, rows, coc,
                                               coc + slack, noise, input_ids, steps=1)
                check = compare_predictions(fast, reference, noise.float().cpu())
                report["parity"].append(dict(
                    attn=attn, samples=rows, coc_tokens=coc, same_decode=check.same_decode,
                    first_step_velocity_max_diff=check.velocity_max_diff,
                    first_step_velocity_max=check.velocity_max))
                print(json.dumps(report["parity"][-1]), flush=True)
                reset_peak()
                add(summarize("fast", "warm", rows, coc, measure(
                    lambda n: cycle_fast(setup, engine, source, n, rows, coc, coc + slack,
                                         False, noise, prompt)[0],
                    args.cycles, args.warmup, 100), device, extra))
        reset_peak()
        noise = torch.randn(1, 64, 2, device=device)
        coc = args.coc[0]
        add(summarize("fast", "cold", 1, coc, measure(
            lambda n: cycle_fast(setup, engine, source, n, 1, coc, coc + slack, True, noise,
                                 prompt)[0], args.cycles, args.warmup, 300), device, extra))
        if args.no_reference:
            continue
        for rows in args.samples:
            noise = torch.randn(rows, 64, 2, device=device)
            for coc in args.coc:
                reset_peak()
                add(summarize("eager", None, rows, coc, measure(
                    lambda n: cycle_eager(setup, eager, source, n, rows, coc, coc + slack,
                                          noise, input_ids)[0],
                    args.reference_cycles, 1), device, extra))
        for rows in args.samples:
            noise = torch.randn(rows, 64, 2, device=device)
            one = measure(lambda n: cycle_generate(setup, source, n, rows, 1, noise, input_ids,
                                                   diffusion=False),
                          max(2, args.reference_cycles // 2), 1)
            one_ms = percentile([r["generate"] * 1e3 for r in one], 50)
            for coc in args.coc:
                reset_peak()
                records = measure(lambda n: cycle_generate(setup, source, n, rows, coc, noise,
                                                           input_ids),
                                  args.reference_cycles, 1)
                entry = summarize("generate", None, rows, coc, records, device, extra)
                entry["p50_generate_1_token_ms"] = one_ms
                entry["decode_ms_per_token"] = ((entry["p50_generate_ms"] - one_ms)
                                                / max(1, coc - 1))
                add(entry)
    report["ratios"] = ratios(report["runs"])
    report["fast_path_report"] = engine.report()
    save()
    return report


# The --families rows: (name, camera labels, instruction, guidance weight).
FAMILY_ROWS = (("R1", False, False, 0.0), ("1.5", True, False, 0.0),
               ("1.5 + nav", True, True, 0.0), ("1.5 + guidance", True, True, 1.5))


def run_families(args, setup, engine, eager, source, grid, report, save) -> None:
    """FAMILY_ROWS side by side (see the module docstring): per sample count, per row, the
    first-Euler-step check, fast warm ticks, eager ticks and eager / fast."""
    device, coc, slack = setup.device, args.coc[0], args.coc_slack
    for rows in args.samples:
        noise = torch.randn(rows, 64, 2, device=device)
        for name, labels, nav, scale in FAMILY_ROWS:
            ids = synthetic_prompt(setup.tokens, grid, setup.image_config.merge_size,
                                   camera_labels=labels,
                                   nav_tokens=args.nav_tokens if nav else 0)
            rope = setup.net.vlm.model.get_rope_index(ids, grid, None)
            ids = ids.to(device)
            prompt = (ids, (rope[0].to(device), rope[1].to(device)))
            guidance = Guidance.of(setup.tokens, ids, scale) if scale else None
            entry = dict(name=name, samples=rows, coc_tokens=coc,
                         prompt_tokens=int(ids.shape[1]), nav_guidance_scale=scale)
            with torch.inference_mode():
                _, fast = cycle_fast(setup, engine, source, 0, rows, coc, coc + slack, True,
                                     noise, prompt, steps=1, guidance=guidance)
                _, reference = cycle_eager(setup, eager, source, 0, rows, coc, coc + slack,
                                           noise, ids, steps=1, guidance=guidance)
            from alpamayo_ros.model.runtime import compare_predictions

            check = compare_predictions(fast, reference, noise.float().cpu())
            entry.update(same_decode=check.same_decode,
                         first_step_velocity_max_diff=check.velocity_max_diff,
                         first_step_velocity_max=check.velocity_max)
            fast_entry = summarize("fast", "warm", rows, coc, measure(
                lambda n: cycle_fast(setup, engine, source, n, rows, coc, coc + slack, False,
                                     noise, prompt, guidance=guidance)[0],
                args.cycles, args.warmup, 100), device)
            eager_entry = summarize("eager", None, rows, coc, measure(
                lambda n: cycle_eager(setup, eager, source, n, rows, coc, coc + slack, noise,
                                      ids, guidance=guidance)[0],
                args.reference_cycles, 1), device)
            entry.update(fast=fast_entry, eager=eager_entry,
                         eager_over_fast_p50=(eager_entry["p50_total_ms"]
                                              / fast_entry["p50_total_ms"]))
            report["families"].append(entry)
            print(f"{name:<15} samples={rows} coc={coc} prompt={entry['prompt_tokens']}: fast "
                  f"p50 {fast_entry['p50_total_ms']:.1f} ms, eager p50 "
                  f"{eager_entry['p50_total_ms']:.1f} ms, eager / fast "
                  f"{entry['eager_over_fast_p50']:.2f}x; first step |dv| "
                  f"{check.velocity_max_diff:.3g} (same decode {check.same_decode})",
                  flush=True)
            save()


def ratios(runs: list[dict]) -> list[dict]:
    """p50 total of eager and generate() over the fast path's warm and cold ticks."""
    out = []
    for fast in (r for r in runs if r["path"] == "fast"):
        for other in (r for r in runs if r["path"] in ("eager", "generate")):
            if (other["samples"], other["coc_tokens"], other.get("attn")) == (
                    fast["samples"], fast["coc_tokens"], fast.get("attn")):
                out.append(dict(samples=fast["samples"], coc_tokens=fast["coc_tokens"],
                                attn=fast.get("attn"), fast_tick=fast["tick"],
                                versus=other["path"],
                                speedup_p50=other["p50_total_ms"] / fast["p50_total_ms"]))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--geometry", choices=["real", "tiny"], default="real")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--frame-size", type=int, nargs=2, default=[1080, 1920],
                        metavar=("H", "W"))
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 6])
    parser.add_argument("--coc", type=int, nargs="+", default=[16, 40],
                        help="forced CoC lengths (tokens, the last is <|traj_future_start|>)")
    parser.add_argument("--cycles", type=int, default=20, help="measured fast-path cycles")
    parser.add_argument("--reference-cycles", type=int, default=20,
                        help="measured eager / generate() cycles")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--attn", nargs="+", default=["sdpa"],
                        choices=["sdpa", "flash_attention_2", "eager"])
    parser.add_argument("--coc-slack", type=int, default=32,
                        help="CoC budget beyond the forced length (extra steps show)")
    parser.add_argument("--stop-check-interval", type=int, default=1)
    parser.add_argument("--no-reference", action="store_true",
                        help="fast path only (no eager / generate() runs)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--families", action="store_true",
                        help="R1, 1.5, 1.5 + nav, 1.5 + guidance rows, fast and eager, "
                             "instead of the standard runs")
    parser.add_argument("--nav-tokens", type=int, default=12,
                        help="with --families: tokens of the instruction text")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if torch.device(args.device).type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: use --geometry tiny --device cpu to check the script on a CPU",
              file=sys.stderr)
        return 2
    if min(args.coc) < 2:
        parser.error("--coc lengths must be >= 2")
    report = run(args)
    for ratio in report.get("ratios", []):
        print(f"samples={ratio['samples']} coc={ratio['coc_tokens']} {ratio['attn']}: "
              f"{ratio['versus']} / fast({ratio['fast_tick']}) = {ratio['speedup_p50']:.2f}x")
    if report["capture_failures"]:
        print("FAILED: steps that should run as CUDA graphs do not: "
              + "; ".join(report["capture_failures"]), file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
