"""Writes a tiny random Alpamayo checkpoint (R1 or 1.5) in the official on-disk format.

Layout under ``root``::

    checkpoint/config.json         official fields, hydra-style _target_ strings,
                                   "vlm_name_or_path": "base_vlm" (relative to root)
    checkpoint/model.safetensors   official tensor names, float32
    base_vlm/config.json           tiny Qwen3-VL config (text hidden 64, 2 layers, ...)
    base_vlm/...                   tokenizer, chat template, preprocessor config

The family (``--family r1`` or ``1.5``) decides config.json's model_type, architectures,
``_target_`` package and 1.5 fields, the special-token names, and whether the Fourier
frequencies and action-space constants are stored (R1) or left to the config (1.5).
It runs the real model code fast on a CPU (demo, CI, replay tests). Weights follow the
fixture recipe (matrices N(0, 1/fan_in), norm weights 1 + 0.1 N, biases 0.05 N, damped
first action_in_proj layer, halved action_out_proj) so flow matching stays well
conditioned. One extra, documented tweak makes the reasoning end: every token embedding
carries a constant offset in hidden channel 0 and the lm_head rows of ``<|cot_end|>`` and
``<|traj_future_start|>`` read that channel, so sampling usually emits them within the
token budget.
Deterministic for a given seed.
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
from pathlib import Path
from typing import Iterator, Optional

import torch

from alpamayo_ros.core.errors import ConfigError
from alpamayo_ros.core.model_family import ALPAMAYO_1_5, FAMILIES, R1
from alpamayo_ros.model.action_space import ActionSpaceConfig

CHECKPOINT_SUBDIR = "checkpoint"
BASE_VLM_SUBDIR = "base_vlm"
TRAJ_VOCAB_SIZE = 4000
# Logit lift of <|cot_end|> / <|traj_future_start|> (times hidden channel 0): with
# temperature 0.6 most sampled rows reach <|traj_future_start|> within a few dozen tokens
# (test_tiny_checkpoint checks that one does within 64). Greedy decoding still runs to the
# token limit.
END_TOKEN_LOGIT_LIFT = (3.0, 2.6)
EMBED_CHANNEL0_OFFSET = 4.0

TEXT_CONFIG = dict(
    model_type="qwen3_vl_text", attention_bias=False, attention_dropout=0.0, head_dim=16,
    hidden_act="silu", hidden_size=64, initializer_range=0.02, intermediate_size=128,
    max_position_embeddings=262144, num_attention_heads=4, num_hidden_layers=2,
    num_key_value_heads=2, rms_norm_eps=1e-6, rope_theta=5000000,
    rope_scaling={"mrope_interleaved": True, "mrope_section": [4, 2, 2], "rope_type": "default"},
    use_cache=True)
VISION_CONFIG = dict(
    model_type="qwen3_vl", deepstack_visual_indexes=[0, 1], depth=2,
    hidden_act="gelu_pytorch_tanh", hidden_size=32, in_channels=3, intermediate_size=64,
    num_heads=2, num_position_embeddings=2304, out_hidden_size=64, patch_size=16,
    spatial_merge_size=2, temporal_patch_size=2, initializer_range=0.02)
EXPERT_CFG = dict(dtype="float32", head_dim=16, hidden_size=32, intermediate_size=64,
                  num_attention_heads=2)
ACTION_IN_PROJ_CFG = {"_target_": "{package}.models.action_in_proj.PerWaypointActionInProjV2",
                      "hidden_size": 32, "max_freq": 100.0, "num_enc_layers": 2,
                      "num_fourier_feats": 20}
# --family names -> config.json model_type; per family the official package (hydra
# _target_ prefix) and architecture name.
FAMILY_NAMES = {"r1": R1, "1.5": ALPAMAYO_1_5}
_PACKAGE = {R1: "alpamayo_r1", ALPAMAYO_1_5: "alpamayo1_5"}
_ARCHITECTURE = {R1: "AlpamayoR1", ALPAMAYO_1_5: "Alpamayo1_5"}


def _write_processor_files(out_dir: Path, processor_files_from: Optional[Path]) -> None:
    if processor_files_from is not None:
        for path in Path(processor_files_from).iterdir():
            if path.is_file() and path.name != "config.json":
                shutil.copy2(path, out_dir / path.name)
        return
    from alpamayo_ros.model.tiny_processor import write_tiny_processor_files

    write_tiny_processor_files(out_dir)


def _base_vlm_config(tokenizer, base_vocab_size: int) -> dict:
    def tid(token: str) -> int:
        return int(tokenizer.convert_tokens_to_ids(token))

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tid("<|endoftext|>")
    text = dict(TEXT_CONFIG, bos_token_id=int(pad), eos_token_id=tid("<|im_end|>"),
                vocab_size=int(base_vocab_size))
    return {"architectures": ["Qwen3VLForConditionalGeneration"], "model_type": "qwen3_vl",
            "image_token_id": tid("<|image_pad|>"), "video_token_id": tid("<|video_pad|>"),
            "vision_start_token_id": tid("<|vision_start|>"),
            "vision_end_token_id": tid("<|vision_end|>"), "tie_word_embeddings": False,
            "text_config": text, "vision_config": dict(VISION_CONFIG)}


def _checkpoint_config(ids, vocab_size: int, traj_ids: dict, model_type: str = R1) -> dict:
    package = _PACKAGE[model_type]
    space = ActionSpaceConfig()
    space_cfg = {"_target_": f"{package}.action_space.UnicycleAccelCurvatureActionSpace"}
    for name in ("a_lambda", "a_ridge", "accel_bounds", "accel_mean", "accel_std",
                 "curvature_bounds", "curvature_mean", "curvature_std", "dt", "kappa_lambda",
                 "kappa_ridge", "n_waypoints", "theta_lambda", "theta_ridge", "v_lambda",
                 "v_ridge"):
        value = getattr(space, name)
        space_cfg[name] = list(value) if isinstance(value, tuple) else value
    config = {
        "action_in_proj_cfg": dict(ACTION_IN_PROJ_CFG,
                                   _target_=ACTION_IN_PROJ_CFG["_target_"].format(
                                       package=package)),
        "action_out_proj_cfg": {"_target_": "torch.nn.Linear"},
        "action_space_cfg": space_cfg,
        "add_special_tokens": True,
        "architectures": [_ARCHITECTURE[model_type]],
        "attn_implementation": "sdpa",
        "diffusion_cfg": {"_target_": f"{package}.diffusion.flow_matching.FlowMatching",
                          "int_method": "euler", "x_dims": "???"},
        "dtype": "float32",
        "expert_cfg": dict(EXPERT_CFG),
        "expert_non_causal_attention": True,
        "hist_traj_tokenizer_cfg": {
            "_target_": f"{package}.models.delta_tokenizer.DeltaTrajectoryTokenizer"},
        "keep_same_dtype": True,
        "max_pixels": 196608,
        "min_pixels": 163840,
        "model_dtype": "float32",
        "model_type": model_type,
        "tokens_per_future_traj": 128,
        "tokens_per_history_traj": 48,
        "traj_token_ids": traj_ids,
        "traj_token_start_idx": int(ids.traj_token_start),
        "traj_tokenizer_cfg": {
            "_recursive_": False,
            "_target_": (f"{package}.action_space.discrete_action_space."
                         "DiscreteTrajectoryTokenizer"),
            "action_space_cfg": {
                "_target_": f"{package}.action_space.UnicycleAccelCurvatureActionSpace"},
            "dims_max": [10, 10], "dims_min": [-10, -10], "num_bins": 3000},
        "traj_vocab_size": TRAJ_VOCAB_SIZE,
        "transformers_version": "4.57.1",
        "vlm_backend": "qwenvl3",
        "vlm_name_or_path": BASE_VLM_SUBDIR,
        "vocab_size": int(vocab_size),
    }
    if model_type == ALPAMAYO_1_5:
        # Official 1.5 config fields (no inference code reads them).
        config.update(include_camera_ids=True, include_frame_nums=True)
    return config


def fixture_style_weights(network, generator: torch.Generator, device=None
                          ) -> Iterator[tuple[str, torch.Tensor]]:
    """Fixture-style well-conditioned random weights (see the module docstring), one
    float32 tensor at a time, keyed by official names in sorted order; the action-space
    buffers and Fourier frequencies are the network's own. One tensor at a time so the
    benchmark can fill a 10B network on its device without a second copy."""
    freqs = network.action_in_proj.timestep_fourier_encoder.freqs.reshape(-1).float()
    per_channel = torch.cat([freqs, freqs]).to(device)  # sin and cos of each frequency
    for name, param in sorted(network.state_dict().items()):
        shape = tuple(param.shape)
        if name.startswith("action_space.") or name.endswith(".freqs"):
            yield name, param.detach().clone().float()
            continue
        if name.endswith("bias"):
            value = 0.05 * torch.randn(shape, generator=generator, device=device)
        elif len(shape) == 1:  # RMSNorm / LayerNorm weights
            value = 1.0 + 0.1 * torch.randn(shape, generator=generator, device=device)
        else:
            fan_in = int(math.prod(shape[1:]))
            value = torch.randn(shape, generator=generator, device=device) / math.sqrt(fan_in)
        if name == "action_in_proj.encoder.trunk.0.weight":
            repeats = shape[1] // per_channel.numel()  # accel, curvature, t blocks
            value = value * (0.5 / (2.0 * math.pi * per_channel)).repeat(repeats)[None, :]
        elif name in ("action_out_proj.weight", "action_out_proj.bias"):
            value = value * 0.5
        yield name, value


def _lift_end_tokens(state: dict, ids, hidden: int) -> None:
    """Make <|cot_end|> and <|traj_future_start|> likely after a few tokens (see module doc)."""
    embed = state["vlm.model.language_model.embed_tokens.weight"]
    embed[:, 0] += EMBED_CHANNEL0_OFFSET / math.sqrt(hidden)
    head = state["vlm.lm_head.weight"]
    for token, lift in zip((ids.cot_end, ids.traj_future_start), END_TOKEN_LOGIT_LIFT):
        head[token, 0] = lift


def write_tiny_checkpoint(root, seed: int = 0, overwrite: bool = False,
                          processor_files_from=None, family: str = R1) -> Path:
    """Write root/checkpoint and root/base_vlm; return the checkpoint directory.

    family: config.json model_type ("alpamayo_r1" or "alpamayo1_5"; "r1" and "1.5" also).

    processor_files_from: copy the tokenizer / processor files from this directory instead
    of generating them with tiny_processor.write_tiny_processor_files (its config.json is
    not copied). Raises ConfigError when root holds them already and overwrite is False.
    """
    from safetensors.torch import save_file

    from alpamayo_ros.model.modeling import AlpamayoR1Network, NetworkSpec, build_vlm_config
    from alpamayo_ros.model.prompt import (SPECIAL_TOKEN_NAMES, TRAJ_TOKEN_NAMES,
                                           load_extended_tokenizer)
    from alpamayo_ros.model.prompt_1_5 import SPECIAL_TOKEN_NAMES_1_5

    model_type = FAMILY_NAMES.get(family, family)
    if model_type not in FAMILIES:
        raise ConfigError(f"family: have {family!r}, need one of "
                          f"{', '.join(list(FAMILY_NAMES) + list(FAMILIES))}")
    root = Path(root)
    ckpt_dir, vlm_dir = root / CHECKPOINT_SUBDIR, root / BASE_VLM_SUBDIR
    for path in (ckpt_dir, vlm_dir):
        if path.exists():
            if not overwrite:
                raise ConfigError(f"{path} exists; pass overwrite=True to replace it")
            shutil.rmtree(path)
    vlm_dir.mkdir(parents=True)
    ckpt_dir.mkdir(parents=True)
    _write_processor_files(vlm_dir, processor_files_from)

    from transformers import AutoTokenizer

    # The base vocabulary is the tokenizer before the <iN> / special-token extension.
    base_tokenizer = AutoTokenizer.from_pretrained(str(vlm_dir), local_files_only=True)
    vlm_config = _base_vlm_config(base_tokenizer, len(base_tokenizer))
    (vlm_dir / "config.json").write_text(json.dumps(vlm_config, indent=2) + "\n")

    tokenizer, ids = load_extended_tokenizer(
        vlm_dir, traj_vocab_size=TRAJ_VOCAB_SIZE,
        special_token_names=(SPECIAL_TOKEN_NAMES_1_5 if model_type == ALPAMAYO_1_5
                             else SPECIAL_TOKEN_NAMES))
    traj_ids = {key: int(tokenizer.convert_tokens_to_ids(tok))
                for key, tok in TRAJ_TOKEN_NAMES.items()}
    config = _checkpoint_config(ids, ids.vocab_size, traj_ids, model_type)
    (ckpt_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    # The tiny network (under 1M parameters) is simply built on the CPU; its buffers
    # (Fourier frequencies, action-space constants) are kept where the family stores them
    # (R1), every weight is redrawn.
    network = AlpamayoR1Network(build_vlm_config(vlm_config, ids.vocab_size, "sdpa"),
                                NetworkSpec.from_checkpoint_config(config))
    generator = torch.Generator().manual_seed(int(seed))
    state = dict(fixture_style_weights(network, generator))
    _lift_end_tokens(state, ids, TEXT_CONFIG["hidden_size"])
    state = {k: v.contiguous().float() for k, v in state.items()}
    save_file(state, str(ckpt_dir / "model.safetensors"), metadata={"format": "pt"})
    return ckpt_dir


def main(argv=None) -> int:
    """CLI: python -m alpamayo_ros.model.tiny_checkpoint OUTPUT_DIR [--seed N] [--overwrite]
    [--family r1|1.5]."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", help="root directory (gets checkpoint/ and base_vlm/)")
    parser.add_argument("--seed", type=int, default=0, help="weight seed (default 0)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing files")
    parser.add_argument("--family", choices=sorted(FAMILY_NAMES), default="r1",
                        help="checkpoint family: r1 (Alpamayo R1, default) or 1.5 "
                             "(Alpamayo 1.5)")
    args = parser.parse_args(argv)
    ckpt = write_tiny_checkpoint(args.output_dir, seed=args.seed, overwrite=args.overwrite,
                                 family=args.family)
    print(f"wrote {ckpt} (load with AlpamayoRuntime.from_pretrained({str(ckpt)!r}))")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
