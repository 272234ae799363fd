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

``batched_guided_sample_actions`` runs both expert calls of a step as one batch of 2N rows
(one launch of every expert layer instead of two): the two caches are copied once into one
2N-row cache of the guided length, the unguided rows' extra columns masked. Positions and
masks are explicit, and a masked column adds exp(finfo.min - m) = 0 to the softmax, so a
row's velocity is the separate call's (up to the kernels' batch-size rounding).
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


def _padded_mask(context: ExpertContext, cache_len: int, num_actions: int,
                 dtype: torch.dtype, non_causal: bool) -> torch.Tensor:
    """The context's expert mask (N, 1, A, context.cache_len + A) laid out for a cache of
    ``cache_len`` >= context.cache_len columns, the columns in between masked."""
    own = generation.expert_attention_mask(context.offsets, context.cache_len, num_actions,
                                           dtype, non_causal)
    mask = torch.full(own.shape[:3] + (cache_len + num_actions,), torch.finfo(dtype).min,
                      dtype=dtype, device=own.device)
    mask[..., :context.cache_len] = own[..., :context.cache_len]
    mask[..., cache_len:] = own[..., context.cache_len:]
    return mask


def batched_context(network: AlpamayoR1Network, guided: ExpertContext,
                    unguided: ExpertContext, num_actions: int
                    ) -> tuple[generation.PreallocatedKVCache, int, torch.Tensor, torch.Tensor]:
    """(2N-row cache, its length, position ids (3, 2N, A), mask (2N, 1, A, len + A)):
    guided rows first, then the unguided ones."""
    cache_len = max(guided.cache_len, unguided.cache_len)
    rows = int(guided.offsets.shape[0])
    cache = generation.PreallocatedKVCache(network.num_layers, cache_len + num_actions,
                                           2 * rows)
    for layer, g_layer, u_layer in zip(cache.layers, guided.cache.layers,
                                       unguided.cache.layers):
        g_keys, g_values = g_layer.cached()
        u_keys, u_values = u_layer.cached()
        layer.lazy_initialization(g_keys)
        for target, g_part, u_part in ((layer.keys, g_keys, u_keys),
                                       (layer.values, g_values, u_values)):
            target[:rows, :, :guided.cache_len] = g_part
            target[rows:, :, :unguided.cache_len] = u_part
            # Masked columns must still be finite (NaN * 0 attention is NaN).
            target[:rows, :, guided.cache_len:cache_len].zero_()
            target[rows:, :, unguided.cache_len:cache_len].zero_()
        layer.length = cache_len
    dtype = network.action_out_proj.weight.dtype
    non_causal = network.spec.expert_non_causal_attention
    positions = torch.cat([generation.expert_position_ids(c.offsets, c.rope_deltas, num_actions)
                           for c in (guided, unguided)], dim=1)
    mask = torch.cat([_padded_mask(c, cache_len, num_actions, dtype, non_causal)
                      for c in (guided, unguided)], dim=0)
    return cache, cache_len, positions, mask


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


def batched_guided_sample_actions(network: AlpamayoR1Network, guided: ExpertContext,
                                  unguided: ExpertContext, noise: torch.Tensor, steps: int,
                                  weight: float, record: Optional[GuidedRecorder] = None
                                  ) -> torch.Tensor:
    """guided_sample_actions with the guided and unguided expert calls of each step run
    as one batch (see the module docstring); same arguments and result."""
    if steps < 1:
        raise ModelRuntimeError(f"diffusion_steps must be >= 1, have {steps}")
    rows, num_actions, _ = noise.shape
    cache, cache_len, positions, mask = batched_context(network, guided, unguided,
                                                        num_actions)
    times = torch.linspace(0.0, 1.0, steps + 1, device=noise.device, dtype=torch.float32)
    dt = 1.0 / steps
    x = noise.float()
    for k in range(steps):
        t = times[k].expand(2 * rows)
        both = expert_velocity(network, torch.cat([x, x]), t, cache, positions, mask,
                               cache_len).float()
        v_guided, v_unguided = both[:rows], both[rows:]
        v = (1.0 - weight) * v_unguided + weight * v_guided
        if record is not None:
            record(k, x, t[:rows], v, v_guided, v_unguided)
        x = x + dt * v
    return x
