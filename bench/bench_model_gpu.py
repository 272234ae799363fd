"""GPU benchmark of our runtime stages at the real Alpamayo-R1 geometry (random bf16 weights).

No weights can be downloaded, so the network is built at the released size (Qwen3-VL-8B
backbone + 2.3B expert, about 11.1B parameters) with random weights directly on the GPU.
The prompt is synthetic but has the real structure (16 images of 1080x1920 -> 180 tokens
each, 48 history tokens, ~3k tokens). Measured per stage, with CUDA synchronisation:
image preprocessing, vision+prefill, CoC decode of a fixed token count (forced tokens, so
every run decodes the same number), flow matching (10 steps), and, side by side in the
same process, transformers' generate() for the same prefill + tokens.

    PYTHONPATH=. python bench/bench_model_gpu.py --tokens 16 64 --samples 1 6 --json $OUT/gpu.json
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

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
TRAJ_TOKEN_START, TRAJ_VOCAB = 151669, 4000
TRAJ_FUTURE_START, FILLER_TOKEN = 155681, 1000


def build_network(device, dtype, attn):
    from alpamayo_ros.model.modeling import (NetworkSpec, _rebuild_non_persistent_buffers,
                                             build_meta_network, build_vlm_config)

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
        for name, p in net.named_parameters():
            if p.ndim == 1:
                p.fill_(1.0 if "norm" in name or "layernorm" in name else 0.0)
            else:
                p.normal_(0.0, 0.02)
        for name, b in net.named_buffers():
            if name.startswith("action_space."):
                b.fill_(1.0)
            elif name.endswith("freqs"):
                b.copy_(torch.logspace(0, 2, b.shape[-1], device=device)[None])
    _rebuild_non_persistent_buffers(net, device)
    return net.eval().requires_grad_(False)


def synthetic_prompt(device, images=16, grid=(1, 20, 36)):
    """(input_ids (1, L), image_grid_thw (16, 3)) with the real prompt structure."""
    per_image = grid[0] * grid[1] * grid[2] // 4
    ids = [151644, 8948, 198] + [1000] * 12 + [151645, 198, 151644, 872, 198]
    for _ in range(images):
        ids += [IDS["vision_start_token_id"]] + [IDS["image_token_id"]] * per_image
        ids += [IDS["vision_end_token_id"]]
    ids += [155674] + [154669 + 500] * 48 + [155676] + [1000] * 20 + [151645, 198, 151644,
                                                                     77091, 198, 155677]
    grid_thw = torch.tensor([list(grid)] * images, dtype=torch.long, device=device)
    return torch.tensor([ids], device=device), grid_thw


def timed(fn, device):
    """(seconds, result) of fn(), synchronising CUDA before and after."""
    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - start, out


def bench_stages(net, prompt, rows: int, tokens: int, repeats: int, device) -> dict:
    """Median prefill / decode (`tokens` forced tokens) / 10-step flow matching seconds."""
    from alpamayo_ros.model import generation

    input_ids, pixel_values, grid = prompt
    settings = generation.DecodeSettings(TRAJ_FUTURE_START, TRAJ_TOKEN_START,
                                         TRAJ_TOKEN_START + TRAJ_VOCAB, tokens)
    forced = torch.tensor([FILLER_TOKEN] * (tokens - 1) + [TRAJ_FUTURE_START], device=device)
    stage = {"prefill": [], "decode": [], "diffusion": []}
    for rep in range(repeats + 1):  # rep 0 warms up
        with torch.inference_mode():
            cache = generation.PreallocatedKVCache(net.num_layers,
                                                   input_ids.shape[1] + tokens + 64, rows)
            t_pre, res = timed(lambda: generation.prefill(net, input_ids, pixel_values, grid,
                                                          cache), device)
            t_dec, dec = timed(lambda: generation.decode_coc(net, cache, res, settings, rows,
                                                             forced_tokens=forced), device)
            noise = torch.randn(rows, 64, 2, device=device)
            t_dif, _ = timed(lambda: generation.sample_actions(
                net, cache, dec.cache_len, dec.offsets, res.rope_deltas, noise, 10), device)
        if rep:
            stage["prefill"].append(t_pre)
            stage["decode"].append(t_dec)
            stage["diffusion"].append(t_dif)
    row = {"samples": rows, "tokens": tokens,
           **{k + "_s": statistics.median(v) for k, v in stage.items()}}
    row["decode_ms_per_token"] = row["decode_s"] / tokens * 1e3
    return row


def bench_generate(net, prompt, rows: int, tokens: int, repeats: int, device) -> float:
    """Median seconds of transformers generate() for the same prefill + tokens."""
    input_ids, pixel_values, grid = prompt

    def hf():
        return net.vlm.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                pixel_values=pixel_values, image_grid_thw=grid,
                                max_new_tokens=tokens, min_new_tokens=tokens,
                                do_sample=rows > 1, num_return_sequences=rows, top_p=0.98,
                                temperature=0.6, top_k=None)

    with torch.inference_mode():
        times = [timed(hf, device)[0] for _ in range(repeats + 1)][1:]
    return statistics.median(times)


def run(args):
    from alpamayo_ros.model.image_processor import ImageProcessorConfig, preprocess_frames

    device = torch.device("cuda")
    dtype = torch.bfloat16
    attn = args.attn
    t_build, net = timed(lambda: build_network(device, dtype, attn), device)
    params = sum(p.numel() for p in net.parameters())
    report = {"device": torch.cuda.get_device_name(device), "attn": attn, "params": params,
              "build_s": t_build, "rows": []}
    print(f"{report['device']}: {params / 1e9:.3f}B params built in {t_build:.1f} s, attn={attn}",
          flush=True)
    frames = torch.randint(0, 256, (16, 1080, 1920, 3), dtype=torch.uint8, device=device)
    input_ids, grid = synthetic_prompt(device)
    prompt_len = input_ids.shape[1]
    pre_times = [timed(lambda: preprocess_frames(frames, ImageProcessorConfig(), layout="hwc",
                                                 device=device), device)[0] for _ in range(3)]
    pixel_values = preprocess_frames(frames, ImageProcessorConfig(), layout="hwc",
                                     device=device)[0].to(dtype)
    report["preprocess_s"] = statistics.median(pre_times)
    print(f"prompt {prompt_len} tokens; preprocess 16x1080x1920 "
          f"{report['preprocess_s'] * 1e3:.1f} ms", flush=True)

    prompt = (input_ids, pixel_values, grid)
    for rows in args.samples:
        for tokens in args.tokens:
            row = bench_stages(net, prompt, rows, tokens, args.repeats, device)
            if args.compare_generate:
                row["generate_s"] = bench_generate(net, prompt, rows, tokens, args.repeats,
                                                   device)
                row["ours_prefill_decode_s"] = row["prefill_s"] + row["decode_s"]
                row["speedup_vs_generate"] = row["generate_s"] / row["ours_prefill_decode_s"]
            report["rows"].append(row)
            print(json.dumps(row), flush=True)
    report["max_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2 ** 30
    return report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--samples", type=int, nargs="+", default=[1, 6])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--attn", default="sdpa", choices=["sdpa", "flash_attention_2", "eager"])
    parser.add_argument("--compare-generate", action="store_true")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: this benchmark needs a GPU", file=sys.stderr)
        return 2
    report = run(args)
    print(f"max GPU memory {report['max_memory_gib']:.1f} GiB")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
