"""Classifier-free guidance for a navigation instruction (Alpamayo 1.5).

What the official ``sample_trajectories_from_data_with_vlm_rollout_cfg_nav`` computes,
after the reasoning was decoded on the prompt WITH the instruction (the guided cache):

1. The unguided prompt: the fused ids with ``<|route_start|>..<|route_end|>`` removed
   (prompt_1_5.remove_route_span); prefilled once (images included) for all rows.
2. The tokens each row generated are fed on top of it, so the unguided cache holds the
   same reasoning without the instruction. The official code also feeds the one token
   sampled after ``<|traj_future_start|>`` (as pad) and then masks its column; that column
   is masked in every expert call, so it is not fed here (same velocities).
3. Offsets (first ``<|traj_future_start|>`` + 1) shift by the span length; positions use the
   unguided prefill's rope_deltas.
4. Each Euler step evaluates the expert on both caches (guided first) and moves along
   ``(1 - w) * v_unguided + w * v_guided`` (FlowMatching._guided_v; w > 1 extrapolates).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from alpamayo_ros.core.errors import ModelRuntimeError
from alpamayo_ros.model import generation
from alpamayo_ros.model.modeling import AlpamayoR1Network, expert_velocity


@dataclass
class ExpertContext:
    """One KV cache the expert attends to: its length, per-row offsets (N,) and the prompt's
    M-RoPE delta."""

    cache: generation.Cache
    cache_len: int
    offsets: torch.Tensor
    rope_deltas: int


def feed_tokens(network: AlpamayoR1Network, cache: generation.Cache, tokens: torch.Tensor,
                rope_deltas: int) -> None:
    """Run the language model over (N, T) tokens at the next T cache positions (causal),
    filling their keys/values; no vocabulary projection."""
    if tokens.shape[1] == 0:
        return
    lm = network.vlm.model.language_model
    start = cache.get_seq_length()
    rows, count = tokens.shape
    cache_position = torch.arange(start, start + count, device=tokens.device)
    position_ids = (cache_position + rope_deltas)[None, None, :].expand(3, rows, count)
    lm(inputs_embeds=lm.embed_tokens(tokens), position_ids=position_ids, past_key_values=cache,
       cache_position=cache_position, use_cache=True)


def unguided_context(network: AlpamayoR1Network, unguided_ids: torch.Tensor,
                     pixel_values: torch.Tensor, image_grid_thw: torch.Tensor,
                     fed_tokens: torch.Tensor, guided_offsets: torch.Tensor, route_len: int,
                     num_actions: int) -> ExpertContext:
    """The unguided cache: prefill of the prompt without the route span, then the tokens
    fed to the guided cache after its prompt (fed_tokens (N, T)), room for the actions."""
    rows = fed_tokens.shape[0]
    prompt_len = int(unguided_ids.shape[1])
    cache = generation.PreallocatedKVCache(network.num_layers,
                                           prompt_len + fed_tokens.shape[1] + num_actions, rows)
    prefilled = generation.prefill(network, unguided_ids, pixel_values, image_grid_thw, cache)
    feed_tokens(network, cache, fed_tokens, prefilled.rope_deltas)
    return ExpertContext(cache, cache.get_seq_length(), guided_offsets - route_len,
                         prefilled.rope_deltas)


GuidedRecorder = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                           torch.Tensor], None]


def guided_sample_actions(network: AlpamayoR1Network, guided: ExpertContext,
                          unguided: ExpertContext, noise: torch.Tensor, steps: int,
                          weight: float, record: Optional[GuidedRecorder] = None
                          ) -> torch.Tensor:
    """Euler flow matching with guidance: x <- x + (1/steps) * v, t_k = k/steps, where
    v = (1 - weight) * v_unguided + weight * v_guided. noise: (N, 64, 2) start x; returns
    the normalised actions (N, 64, 2) float32. record(k, x, t, v, v_guided, v_unguided)
    is called at every step (for checks)."""
    if steps < 1:
        raise ModelRuntimeError(f"diffusion_steps must be >= 1, have {steps}")
    rows, num_actions, _ = noise.shape
    model_dtype = network.action_out_proj.weight.dtype
    non_causal = network.spec.expert_non_causal_attention
    inputs = []
    for context in (guided, unguided):
        mask = generation.expert_attention_mask(context.offsets, context.cache_len, num_actions,
                                                model_dtype, non_causal)
        positions = generation.expert_position_ids(context.offsets, context.rope_deltas,
                                                   num_actions)
        inputs.append((context, positions, mask))
    times = torch.linspace(0.0, 1.0, steps + 1, device=noise.device, dtype=torch.float32)
    dt = 1.0 / steps
    x = noise.float()
    for k in range(steps):
        t = times[k].expand(rows)
        v_guided, v_unguided = (
            expert_velocity(network, x, t, ctx.cache, positions, mask, ctx.cache_len).float()
            for ctx, positions, mask in inputs)
        v = (1.0 - weight) * v_unguided + weight * v_guided
        if record is not None:
            record(k, x, t, v, v_guided, v_unguided)
        x = x + dt * v
    return x
