"""Reasoning (CoC) decoding and flow-matching trajectory sampling for Alpamayo-R1.

Steps of one model call (model-spec sections 5-6):

1. ``prefill``: one VLM forward over the prompt (batch 1) that fills a KV cache with room
   for N sample rows, the CoC budget and the 64 action tokens.
2. ``decode_coc``: token-by-token decoding for N rows with the cache; ``<iN>`` trajectory
   tokens are banned; stop one step after every row has emitted ``<|traj_future_start|>``.
3. ``sample_actions``: Euler integration of the flow-matching velocity from the expert,
   which attends to each row's cached prefix through a fixed additive mask.

All token positions are explicit M-RoPE ids (3, B, L); no hidden state is kept on the model
between calls. This is the eager reference path (:class:`EagerEngine`); ``fast_path.py``
computes the same with fixed shapes (static cache, captured steps) and is tested against it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch
from transformers.cache_utils import Cache, CacheLayerMixin

from alpamayo_ros.core.errors import ModelRuntimeError
from alpamayo_ros.core.types import NUM_WAYPOINTS
from alpamayo_ros.model.engine import (Lap, Prediction, PreparedInputs, Request, non_finite,
                                       raise_if_not_finite, seed_and_noise)
from alpamayo_ros.model.modeling import AlpamayoR1Network, expert_velocity, official_autocast
from alpamayo_ros.model.static_cache import append_to_layer


class PreallocatedKVLayer(CacheLayerMixin):
    """One layer's KV cache in a buffer allocated once: (rows, kv_heads, capacity, head_dim).

    Why not transformers' DynamicCache: it concatenates on every update (an O(length) copy
    per decoded token and per Euler step) and needs an explicit batch expansion. Here a
    batch-1 prefill is written broadcast into all rows, decode steps write one slot, and the
    expert's 64 action tokens are written after the prefix and dropped by ``crop`` (moving
    the length back), so the prefix is never copied again.
    """

    is_compileable = False
    is_sliding = False

    def __init__(self, capacity: int, rows: int) -> None:
        super().__init__()
        self.capacity = int(capacity)
        self.rows = int(rows)
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor) -> None:
        _, heads, _, head_dim = key_states.shape
        shape = (self.rows, heads, self.capacity, head_dim)
        self.dtype, self.device = key_states.dtype, key_states.device
        self.keys = torch.empty(shape, dtype=key_states.dtype, device=key_states.device)
        self.values = torch.empty(shape, dtype=key_states.dtype, device=key_states.device)
        self.is_initialized = True

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor,
               cache_kwargs: Optional[dict[str, Any]] = None):
        if not self.is_initialized:
            self.lazy_initialization(key_states)
        return append_to_layer(self, key_states, value_states)

    def get_mask_sizes(self, cache_position: torch.Tensor) -> tuple[int, int]:
        return self.length + cache_position.shape[0], 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_cache_shape(self) -> int:
        return self.capacity

    def crop(self, max_length: int) -> None:
        if max_length < 0:
            max_length = self.length + max_length
        self.length = min(self.length, max_length)

    def cached(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of the valid part: keys, values (rows, kv_heads, length, head_dim)."""
        return self.keys[:, :, :self.length], self.values[:, :, :self.length]


class PreallocatedKVCache(Cache):
    """A transformers Cache made of ``PreallocatedKVLayer``s (see there for why)."""

    def __init__(self, num_layers: int, capacity: int, rows: int) -> None:
        super().__init__(layers=[PreallocatedKVLayer(capacity, rows) for _ in range(num_layers)])

    def crop(self, max_length: int) -> None:
        for layer in self.layers:
            layer.crop(max_length)


@dataclass
class PrefillResult:
    """Output of the prompt prefill.

    last_logits: (1, vocab) float32 logits at the last prompt position.
    rope_deltas: M-RoPE delta (max position + 1 - length) of the prompt, an int.
    prompt_len: number of prompt tokens now in the cache.
    """

    last_logits: torch.Tensor
    rope_deltas: int
    prompt_len: int


def prefill(network: AlpamayoR1Network, input_ids: torch.Tensor, pixel_values: torch.Tensor,
            image_grid_thw: torch.Tensor, cache: Cache) -> PrefillResult:
    """Run the VLM (vision encoder + language model) once over the prompt, batch 1.

    input_ids: (1, L) int64; pixel_values: (P, 1536) float patches; image_grid_thw: (n, 3).
    Fills ``cache`` with L positions; only the last position goes through ``lm_head``.
    """
    vlm = network.vlm
    position_ids, rope_deltas = vlm.model.get_rope_index(input_ids, image_grid_thw, None)
    out = vlm.model(input_ids=input_ids, pixel_values=pixel_values,
                    image_grid_thw=image_grid_thw, position_ids=position_ids,
                    past_key_values=cache, use_cache=True)
    logits = vlm.lm_head(out.last_hidden_state[:, -1:, :])[:, 0].float()
    return PrefillResult(logits, int(rope_deltas.reshape(-1)[0]), int(input_ids.shape[1]))


@dataclass(frozen=True)
class DecodeSettings:
    """Token ids and sampling settings of the CoC decode.

    banned_start/banned_stop: id range [start, stop) of the <iN> trajectory tokens (set to
    -inf before temperature and top-p). sample=False gives greedy decoding.
    """

    traj_future_start: int
    banned_start: int
    banned_stop: int
    max_new_tokens: int
    sample: bool = True
    temperature: float = 0.6
    top_p: float = 0.98


@dataclass
class DecodeResult:
    """Generated tokens and per-row expert offsets.

    tokens: (N, T) int64 sampled tokens (T <= max_new_tokens; the extra token after the
        last <|traj_future_start|> is never sampled, only its KV-producing input is fed).
    offsets: (N,) int64, index of each row's first <|traj_future_start|> + 1 in the full
        sequence, or seq_len for rows that have none.
    found: (N,) bool, whether the row emitted <|traj_future_start|>.
    cache_len: positions now in the cache (prompt + fed tokens).
    seq_len: cache_len + 1 (the last generated token is never fed), as in HF generate.
    """

    tokens: torch.Tensor
    offsets: torch.Tensor
    found: torch.Tensor
    cache_len: int
    seq_len: int


def _language_model_step(network: AlpamayoR1Network, tokens: torch.Tensor, cache: Cache,
                         rope_deltas: int, with_logits: bool) -> Optional[torch.Tensor]:
    """Feed one token per row (N,) at the next cache position; return (N, vocab) logits."""
    lm = network.vlm.model.language_model
    position = cache.get_seq_length()
    rows = tokens.shape[0]
    cache_position = torch.tensor([position], device=tokens.device)
    position_ids = torch.full((3, rows, 1), position + rope_deltas, dtype=torch.long,
                              device=tokens.device)
    out = lm(inputs_embeds=lm.embed_tokens(tokens[:, None]), position_ids=position_ids,
             past_key_values=cache, cache_position=cache_position, use_cache=True)
    if not with_logits:
        return None
    return network.vlm.lm_head(out.last_hidden_state[:, -1]).float()


def decode_coc(network: AlpamayoR1Network, cache: Cache, prefill_result: PrefillResult,
               settings: DecodeSettings, num_rows: int,
               generator: Optional[torch.Generator] = None,
               forced_tokens: Optional[torch.Tensor] = None) -> DecodeResult:
    """Decode the reasoning for ``num_rows`` rows that share the prefilled prompt.

    Written by hand instead of ``generate()``: the cache is preallocated and shared with the
    expert, no per-step re-preparation of multimodal inputs or rope indices is needed, and
    the final <|traj_future_start|> is fed without computing the vocabulary projection.
    forced_tokens: (T,) ids used instead of sampling (teacher forcing for checks); the
    logits are still computed.
    """
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    device = prefill_result.last_logits.device
    warpers: list[Callable] = []
    if settings.sample:
        # transformers' warpers give the official temperature -> top-p order and semantics.
        warpers = [TemperatureLogitsWarper(settings.temperature), TopPLogitsWarper(settings.top_p)]
    logits = prefill_result.last_logits.expand(num_rows, -1)
    found = torch.zeros(num_rows, dtype=torch.bool, device=device)
    first_index = torch.full((num_rows,), -1, dtype=torch.long, device=device)
    generated: list[torch.Tensor] = []
    max_new = settings.max_new_tokens
    if forced_tokens is not None:
        max_new = min(max_new, int(forced_tokens.numel()))
    for step in range(max_new):
        if forced_tokens is not None:
            token = forced_tokens.reshape(-1)[step].to(device).expand(num_rows)
        else:
            if not bool(torch.isfinite(logits).all()):  # this loop syncs every step anyway
                raise non_finite("CoC logits")
            token = _choose_tokens(logits, settings, warpers, generator)
        generated.append(token)
        newly = (token == settings.traj_future_start) & ~found
        first_index = torch.where(newly, torch.full_like(first_index, step), first_index)
        found = found | newly
        last_step = step + 1 == max_new
        all_found = bool(found.all())
        if all_found and not last_step:
            # One more step so the <|traj_future_start|> KV is in the cache; the token that
            # step would sample is never used, so its vocabulary projection is skipped.
            _language_model_step(network, token, cache, prefill_result.rope_deltas, False)
            break
        if all_found or last_step:
            break
        logits = _language_model_step(network, token, cache, prefill_result.rope_deltas, True)
    tokens = (torch.stack(generated, dim=1) if generated
              else torch.zeros((num_rows, 0), dtype=torch.long, device=device))
    cache_len = cache.get_seq_length()
    seq_len = cache_len + 1
    offsets = torch.where(found, prefill_result.prompt_len + first_index + 1,
                          torch.full_like(first_index, seq_len))
    return DecodeResult(tokens, offsets, found, cache_len, seq_len)


def _choose_tokens(logits: torch.Tensor, settings: DecodeSettings, warpers: list,
                   generator: Optional[torch.Generator]) -> torch.Tensor:
    scores = logits.clone()
    scores[:, settings.banned_start:settings.banned_stop] = float("-inf")
    if not settings.sample:
        return scores.argmax(dim=-1)
    for warper in warpers:
        scores = warper(None, scores)
    probs = torch.softmax(scores, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


def expert_attention_mask(offsets: torch.Tensor, cache_len: int, num_actions: int,
                          dtype: torch.dtype, non_causal: bool = True) -> torch.Tensor:
    """Additive mask (N, 1, num_actions, cache_len + num_actions) for the expert.

    Row i hides cache columns [offsets[i], cache_len) (tokens generated after its
    <|traj_future_start|>) with finfo(dtype).min; action tokens see each other fully
    (non_causal) or causally.
    """
    rows = offsets.shape[0]
    device = offsets.device
    columns = torch.arange(cache_len + num_actions, device=device)
    hidden = (columns[None, :] >= offsets[:, None]) & (columns[None, :] < cache_len)
    hidden = hidden[:, None, None, :].expand(rows, 1, num_actions, cache_len + num_actions)
    if not non_causal:
        query = torch.arange(num_actions, device=device)
        future = columns[None, :] > (cache_len + query[:, None])
        hidden = hidden | future[None, None]
    mask = torch.zeros(hidden.shape, dtype=dtype, device=device)
    return mask.masked_fill(hidden, torch.finfo(dtype).min)


def expert_position_ids(offsets: torch.Tensor, rope_deltas: int, num_actions: int) -> torch.Tensor:
    """M-RoPE ids (3, N, num_actions) = arange + rope_deltas + offset, same on all axes."""
    steps = torch.arange(num_actions, device=offsets.device)
    base = steps[None, :] + offsets[:, None] + rope_deltas
    return base[None].expand(3, -1, -1)


StepRecorder = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None]


def sample_actions(network: AlpamayoR1Network, cache: Cache, cache_len: int,
                   offsets: torch.Tensor, rope_deltas: int, noise: torch.Tensor,
                   steps: int, record: Optional[StepRecorder] = None) -> torch.Tensor:
    """Flow matching with Euler steps: x <- x + (1/steps) v(x, t_k), t_k = k/steps.

    noise: (N, 64, 2) float32 initial x (t = 0); returns the normalised actions (N, 64, 2)
    in float32. The cache holds cache_len positions and is left unchanged.
    record(k, x, t, v) is called after each velocity evaluation (for checks).
    """
    if steps < 1:
        raise ModelRuntimeError(f"diffusion_steps must be >= 1, have {steps}")
    rows, num_actions, _ = noise.shape
    model_dtype = network.action_out_proj.weight.dtype
    mask = expert_attention_mask(offsets, cache_len, num_actions, model_dtype,
                                 network.spec.expert_non_causal_attention)
    position_ids = expert_position_ids(offsets, rope_deltas, num_actions)
    times = torch.linspace(0.0, 1.0, steps + 1, device=noise.device, dtype=torch.float32)
    dt = 1.0 / steps
    x = noise.float()
    for k in range(steps):
        t = times[k].expand(rows)
        v = expert_velocity(network, x, t, cache, position_ids, mask, cache_len).float()
        if record is not None:
            record(k, x, t, v)
        x = x + dt * v
    raise_if_not_finite(torch.isfinite(x).all(), "flow-matching velocities")
    return x


class EagerEngine:
    """The reference path as an engine (see engine.py): a cache sized for the call,
    transformers' attention, one host sync per decode step.

    token_ids: the checkpoint's special ids (prompt.TokenIds); generator: re-seeded by each
    call (see engine.seed_and_noise).
    """

    path = "eager"

    def __init__(self, network: AlpamayoR1Network, token_ids, device: torch.device,
                 dtype: torch.dtype) -> None:
        self.network = network
        self.token_ids = token_ids
        self.device = torch.device(device)
        self.dtype = dtype
        self.generator = torch.Generator(device=self.device)

    def run(self, prepared: PreparedInputs, request: Request,
            lap: Lap = lambda stage: None) -> Prediction:
        if len(prepared.encoded()) != prepared.image_grid_thw.shape[0]:
            raise ModelRuntimeError("the eager path needs the patches of every frame: prepare "
                                    "the input without frame keys")
        net, ids, rows = self.network, self.token_ids, int(request.rows)
        noise = seed_and_noise(self.generator, request, self.device)
        prompt_len = int(prepared.input_ids.shape[1])
        capacity = prompt_len + int(request.max_new_tokens) + NUM_WAYPOINTS
        cache = PreallocatedKVCache(net.num_layers, capacity, rows)
        settings = DecodeSettings(
            traj_future_start=ids.traj_future_start, banned_start=ids.traj_token_start,
            banned_stop=ids.traj_token_end, max_new_tokens=int(request.max_new_tokens),
            sample=bool(request.sample), temperature=float(request.temperature),
            top_p=float(request.top_p))
        with official_autocast(self.device, self.dtype):
            prefilled = prefill(net, prepared.input_ids, prepared.pixel_values.to(self.dtype),
                                prepared.image_grid_thw, cache)
            lap("prefill")
            decoded = decode_coc(net, cache, prefilled, settings, rows, self.generator,
                                 request.forced_tokens)
            lap("coc_decode")
            if prepared.unguided_input_ids is not None and request.nav_guidance_scale != 0:
                actions = self._guided_actions(prepared, request, cache, prefilled, decoded,
                                               noise, prompt_len)
            else:
                actions = sample_actions(net, cache, decoded.cache_len, decoded.offsets,
                                         prefilled.rope_deltas, noise,
                                         int(request.diffusion_steps))
            lap("diffusion")
        return Prediction(actions, decoded.tokens, decoded.found, decoded.offsets,
                          prefilled.rope_deltas, decoded.cache_len, path=self.path,
                          decode_steps=decoded.cache_len - prompt_len)

    def _guided_actions(self, prepared: PreparedInputs, request: Request, cache, prefilled,
                        decoded, noise: torch.Tensor, prompt_len: int) -> torch.Tensor:
        """Flow matching with classifier-free navigation guidance (nav_guidance.py): the
        unguided context is the prompt without its route span plus the same fed CoC."""
        from alpamayo_ros.model import nav_guidance  # it builds on this module's steps

        net = self.network
        fed = decoded.tokens[:, :decoded.cache_len - prompt_len]
        unguided = nav_guidance.unguided_context(
            net, prepared.unguided_input_ids, prepared.pixel_values.to(self.dtype),
            prepared.image_grid_thw, fed, decoded.offsets, prepared.route_len, NUM_WAYPOINTS)
        return nav_guidance.batched_guided_sample_actions(
            net, nav_guidance.ExpertContext(cache, decoded.cache_len, decoded.offsets,
                                            prefilled.rope_deltas),
            unguided, noise, int(request.diffusion_steps), float(request.nav_guidance_scale))

    def clear_vision_cache(self) -> None:  # nothing kept between calls
        return None
