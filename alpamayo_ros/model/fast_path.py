"""The real-time inference path: static KV cache, captured steps, sync-free decoding,
vision features reused across ticks.

It computes what ``generation.py`` (the eager reference path) computes, with fixed tensor
shapes so that the two per-token loops can be captured as CUDA graphs:

* **Row state** (:class:`RowState`, one per sample-row count): a
  :class:`~alpamayo_ros.model.static_cache.StaticKVCache` of ``capacity`` = prompt + CoC
  budget + 64 action slots (rounded up to 16), allocated once and reused by later calls
  while it is large enough, plus persistent device tensors: the token fed next, its cache
  slot, the step index, the rope delta, the generated-token buffer, per-row
  ``found``/``first_index`` of ``<|traj_future_start|>``, forced tokens, and the
  flow-matching state (x, step index, expert mask, expert positions).
* **Decode step** (captured per row count and sampler settings): embed the fed tokens,
  run the Qwen3-VL language model over the full cache with an additive mask that shows
  slots 0..position, project to the vocabulary, choose the next tokens with
  :class:`~alpamayo_ros.model.sampling.TokenChooser` (no host sync), record them and
  advance the position, all in place.
* **Stop test**: after each step the host posts a non-blocking copy of the per-row stop
  status and reads the one posted a step earlier (on CUDA; the CPU reads at once), so the
  GPU always has one queued step. That queued step is the one the stop rule needs anyway
  (one step after every row emitted ``<|traj_future_start|>``, so its KV is cached), so no
  step runs past the stop. With ``stop_check_interval`` K > 1 (tests) steps do run past
  it; they only write slots that the expert mask hides and tokens that are cut off, so the
  outputs still equal the reference loop's (budget ``max_new_tokens`` the same).
* **Finite check**: each decode and flow-matching step folds "all logits / velocities
  finite" into a device flag; the host reads it once per call and raises NonFiniteError
  (the node reports MODEL_ERROR with the reason) instead of planning from NaN.
* **Flow-matching step** (captured per row count and step count): the 64 action tokens
  are written to the fixed last 64 slots (no crop), the expert mask (built once per call
  on the device) hides each row's tokens after its ``<|traj_future_start|>`` and every
  unused slot, then x <- x + dt * v.
* **Navigation guidance** (1.5 with an instruction and ``nav_guidance_scale`` not 0; what
  ``nav_guidance`` computes on the eager path): a *guided* row state per row count, whose
  cache has 2N rows. The decode runs on the first N (a view; the same captured step as
  without guidance); the prefill writes the prompt into all 2N rows, and the last N get
  the unguided context by feeding only what follows the route span (the prompt's tail
  and the fed CoC) from ``<|route_start|>``'s slot on, since everything before the span is
  the same in both prompts (:meth:`FastEngine.unguided_feed`). Each captured Euler step
  is one expert call over the 2N rows (guided and unguided, as nav_guidance's batched
  sampler) and moves x by (1 - w) * v_unguided + w * v_guided, w a device tensor set per
  call.
* **Vision reuse**: the vision encoder treats images independently (patch embedding,
  position embeddings and rotary ids per image grid; attention split at the image
  boundaries ``cu_seqlens``; merger and DeepStack mergers per group of 4 patches of one
  image; see transformers' ``Qwen3VLVisionModel.forward``), so its output for a frame
  depends on that frame alone. Features (merged embeddings and the DeepStack features)
  are kept per (caller frame key, frame size) for the frames of the last call, and only
  new frames are encoded. transformers' ``Qwen3VLModel.forward`` has no way to take
  precomputed image features, so :meth:`FastEngine.prefill` does its image-token scatter
  and calls its language model directly.

On CPU the same steps run without graphs, so every line above is exercised by the CPU
tests (``test/test_fast_path.py``). Numerics follow the official autocast run
(``modeling.official_autocast``) on both paths.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Hashable, Optional, Sequence

import torch

from alpamayo_ros.core.errors import ModelRuntimeError
from alpamayo_ros.core.types import NUM_WAYPOINTS
from alpamayo_ros.model import nav_guidance
from alpamayo_ros.model.cuda_graphs import OnceLog, StepRunner
from alpamayo_ros.model.engine import (Lap, Prediction, PreparedInputs, Request,
                                       raise_if_not_finite, seed_and_noise)
from alpamayo_ros.model.generation import expert_position_ids
from alpamayo_ros.model.modeling import AlpamayoR1Network, official_autocast
from alpamayo_ros.model.sampling import TokenChooser
from alpamayo_ros.model.static_cache import (GROUPED_SDPA, StaticKVCache, round_capacity,
                                             with_attention)


@dataclass(frozen=True)
class FastPathConfig:
    """Settings of the fast path.

    cuda_graphs: capture the decode and flow-matching steps on CUDA (else plain calls).
    stop_check_interval: decode steps between two reads of the stop status (1: every step,
        the default; larger values only to check that extra steps are harmless). On CUDA,
        or above 1, the host reads each status only after posting the next one.
    max_row_counts: row states (a row count, with or without navigation guidance) whose
        caches and graphs are kept (least recently used goes).
    vision_reuse: keep the vision features of the last call's frames (needs frame keys).
    self_check_atol: largest first-Euler-step velocity difference between the fast and the
        eager path that the warm-up self-check accepts (None: 1e-4 for float32 weights,
        0.05 for bf16/fp16, where the two paths' attention kernels round differently).
    """

    cuda_graphs: bool = True
    stop_check_interval: int = 1
    max_row_counts: int = 3
    vision_reuse: bool = True
    self_check_atol: Optional[float] = None

    def __post_init__(self):
        if int(self.stop_check_interval) < 1:
            raise ModelRuntimeError(
                f"stop_check_interval must be >= 1, have {self.stop_check_interval}")
        if int(self.max_row_counts) < 1:
            raise ModelRuntimeError(f"max_row_counts must be >= 1, have {self.max_row_counts}")


@dataclass(frozen=True)
class VisionFeatures:
    """Vision-encoder output of one frame: embeds (tokens, text hidden) and the DeepStack
    features, one (tokens, text hidden) tensor per DeepStack layer."""

    embeds: torch.Tensor
    deepstack: tuple[torch.Tensor, ...]


class RowState:
    """Static cache and persistent step tensors for ``rows`` sample rows.

    guided: calls with navigation guidance. The cache then has 2 * rows rows: the first
    ``rows`` (``cache``, a view) hold the prompt with the instruction and the decoded
    reasoning, the others (``unguided_cache``) the same without the instruction, and
    each flow-matching step runs the expert once over all 2 * rows rows (``full_cache``).
    """

    def __init__(self, network: AlpamayoR1Network, rows: int, capacity: int,
                 device: torch.device, dtype: torch.dtype, traj_future_start: int,
                 guided: bool = False) -> None:
        text = network.vlm.config.text_config
        self.rows, self.capacity, self.guided = rows, capacity, bool(guided)
        self.flow_rows = 2 * rows if self.guided else rows
        self.action_start = capacity - NUM_WAYPOINTS
        self.full_cache = StaticKVCache(network.num_layers, self.flow_rows, capacity,
                                        text.num_key_value_heads, text.head_dim, dtype, device)
        self.cache = self.full_cache.row_view(0, rows) if self.guided else self.full_cache
        self.unguided_cache = (self.full_cache.row_view(rows, 2 * rows) if self.guided
                               else None)
        self.traj_future_start = traj_future_start
        long = dict(dtype=torch.long, device=device)
        self.columns = torch.arange(capacity, **long)
        self.token_in = torch.zeros(rows, **long)
        self.position = torch.zeros((), **long)
        self.rope_delta = torch.zeros((), **long)
        self.step = torch.full((), -1, **long)
        self.tokens = torch.zeros(rows, capacity, **long)
        self.found = torch.zeros(rows, dtype=torch.bool, device=device)
        self.first_index = torch.full((rows,), -1, **long)
        self.forced = torch.zeros(capacity, **long)
        self.use_forced = torch.zeros((), dtype=torch.bool, device=device)
        # False once a step saw NaN/inf logits or velocities (read once per call).
        self.finite = torch.ones((), dtype=torch.bool, device=device)
        self.mask_open = torch.zeros((), dtype=dtype, device=device)
        self.mask_hidden = torch.full((), torch.finfo(dtype).min, dtype=dtype, device=device)
        self.x = torch.zeros(rows, NUM_WAYPOINTS, 2, dtype=torch.float32, device=device)
        self.flow_step = torch.zeros((), **long)
        mask_rows = 1 if network.spec.expert_non_causal_attention else NUM_WAYPOINTS
        self.expert_mask = torch.zeros(self.flow_rows, 1, mask_rows, capacity, dtype=dtype,
                                       device=device)
        self.expert_positions = torch.zeros(3, self.flow_rows, NUM_WAYPOINTS, **long)
        # Guidance: v = unguided_weight * v_unguided + guided_weight * v_guided (set per
        # call, so one captured step serves every weight).
        self.guided_weight = torch.ones((), dtype=torch.float32, device=device)
        self.unguided_weight = torch.zeros((), dtype=torch.float32, device=device)
        self.action_slots = torch.arange(self.action_start, capacity, **long)
        self.decode_runners: dict[tuple, StepRunner] = {}
        self.flow_runners: dict[int, StepRunner] = {}

    def begin_decode(self, prompt_len: int, rope_delta: torch.Tensor,
                     forced: Optional[torch.Tensor]) -> None:
        """Reset the decode tensors for a prompt of ``prompt_len`` slots (no host sync)."""
        self.step.fill_(-1)
        self.position.fill_(prompt_len - 1)
        self.rope_delta.copy_(rope_delta.reshape(()))
        self.found.zero_()
        self.first_index.fill_(-1)
        self.finite.fill_(True)
        if forced is not None:
            self.forced[:forced.numel()].copy_(forced.reshape(-1))
        self.use_forced.fill_(forced is not None)

    def record(self, token: torch.Tensor) -> None:
        """Store the tokens (rows,) chosen at the next step and make them the ones fed next."""
        self.step += 1
        self.position += 1
        forced = self.forced.index_select(0, self.step.reshape(1))
        token = torch.where(self.use_forced, forced, token)
        self.tokens.index_copy_(1, self.step.reshape(1), token[:, None])
        newly = (token == self.traj_future_start) & ~self.found
        self.first_index.copy_(torch.where(newly, self.step, self.first_index))
        self.found |= newly
        self.token_in.copy_(token)

    def stop_status(self) -> torch.Tensor:
        """(rows,) index of each row's first <|traj_future_start|>, -1 where none yet."""
        return torch.where(self.found, self.first_index, -1)

    def reset_indices(self) -> None:
        """Valid indices for a warm-up call of the steps (before a capture)."""
        self.step.fill_(-1)
        self.position.zero_()
        self.flow_step.zero_()


class _StatusReader:
    """Reads RowState.stop_status() on the host: non-blocking copies into pinned memory
    with an event each on CUDA, plain copies elsewhere."""

    def __init__(self, device: torch.device, rows: int, lag: int) -> None:
        self.cuda = device.type == "cuda"
        self.lag = lag
        self.slots = [torch.empty(rows, dtype=torch.long, pin_memory=self.cuda)
                      for _ in range(lag + 2)]
        self.pending: collections.deque = collections.deque()
        self.count = 0

    def post(self, status: torch.Tensor) -> None:
        slot = self.slots[self.count % len(self.slots)]
        self.count += 1
        slot.copy_(status, non_blocking=self.cuda)
        event = None
        if self.cuda:
            event = torch.cuda.Event()
            event.record()
        self.pending.append((slot, event))

    def take(self) -> list[int]:
        slot, event = self.pending.popleft()
        if event is not None:
            event.synchronize()
        return slot.tolist()


class FastEngine:
    """Fast-path inference on one network and device (see the module docstring).

    token_ids: the checkpoint's special ids (prompt.TokenIds); log: where shape changes,
    captures and capture failures are reported (once each).
    """

    path = "fast"

    def __init__(self, network: AlpamayoR1Network, token_ids, device: torch.device,
                 dtype: torch.dtype, config: FastPathConfig = FastPathConfig(),
                 log: Optional[OnceLog] = None) -> None:
        self.network = network
        self.token_ids = token_ids
        self.traj_future_start = int(token_ids.traj_future_start)
        # The static steps' own instances of the language model and the expert (same
        # weights), built to call the grouped static-cache attention.
        self.step_language_model = with_attention(network.vlm.model.language_model,
                                                  GROUPED_SDPA)
        self.step_expert = with_attention(network.expert, GROUPED_SDPA)
        self.device = torch.device(device)
        self.dtype = dtype
        self.config = config
        self.log = log or OnceLog()
        self.generator = torch.Generator(device=self.device)
        self.use_graphs = bool(config.cuda_graphs) and self.device.type == "cuda"
        self._pool = torch.cuda.graph_pool_handle() if self.use_graphs else None
        self._states: "collections.OrderedDict[int, RowState]" = collections.OrderedDict()
        self._vision: dict[Hashable, VisionFeatures] = {}
        self.vision_stats = {"encoded": 0, "reused": 0}

    # ----------------------------------------------------------------- row states
    @staticmethod
    def state_key(rows: int, guided: bool = False) -> Hashable:
        """Key of a row state in ``_states``: the row count, (rows, "guided") with
        navigation guidance."""
        return (rows, "guided") if guided else rows

    def state_for(self, rows: int, prompt_len: int, max_new_tokens: int,
                  guided: bool = False) -> RowState:
        """The RowState for ``rows`` rows (with or without guidance), grown (new cache, new
        graphs) when too small."""
        need = prompt_len + max_new_tokens + NUM_WAYPOINTS
        key = self.state_key(rows, guided)
        what = f"{rows} row(s){' with guidance' if guided else ''}"
        state = self._states.get(key)
        if state is not None and state.capacity >= need:
            self._states.move_to_end(key)
            return state
        capacity = round_capacity(need)
        if state is not None:
            self.log.once(("grow", key, capacity),
                          f"fast path: KV cache for {what} grows from {state.capacity} "
                          f"to {capacity} slots (prompt {prompt_len} + CoC {max_new_tokens} + "
                          f"{NUM_WAYPOINTS}); its steps are captured again")
            del self._states[key]
            state = None
        while len(self._states) >= self.config.max_row_counts:
            evicted, old = self._states.popitem(last=False)
            self.log.once(("evict", evicted, key),
                          f"fast path: dropping the cache of {old.rows} row(s)"
                          f"{' with guidance' if old.guided else ''} to make room for {what} "
                          f"(max_row_counts {self.config.max_row_counts})")
        state = RowState(self.network, rows, capacity, self.device, self.dtype,
                         self.traj_future_start, guided=guided)
        self.log.once(("alloc", key, capacity),
                      f"fast path: KV cache for {what} x {capacity} slots "
                      f"({state.full_cache.memory_bytes() / 2 ** 20:.0f} MiB"
                      f"{', guided and unguided rows' if guided else ''})")
        self._states[key] = state
        return state

    def decode_runner(self, state: RowState, chooser: TokenChooser) -> StepRunner:
        runner = state.decode_runners.get(chooser.key)
        if runner is None:
            runner = StepRunner(lambda: self._decode_step(state, chooser),
                                f"the decode step ({state.rows} row(s), {state.capacity} slots, "
                                f"{'guided, ' if state.guided else ''}"
                                f"{'sampled' if chooser.sample else 'greedy'})",
                                self.device, generators=(self.generator,), pool=self._pool,
                                log=self.log, reset=state.reset_indices)
            state.decode_runners[chooser.key] = runner
        return runner

    def flow_runner(self, state: RowState, steps: int) -> StepRunner:
        runner = state.flow_runners.get(steps)
        if runner is None:
            times = torch.linspace(0.0, 1.0, steps + 1, device=self.device, dtype=torch.float32)
            runner = StepRunner(lambda: self._flow_step(state, times, 1.0 / steps),
                                f"the flow-matching step ({state.rows} row(s), "
                                f"{'guided, ' if state.guided else ''}"
                                f"{state.capacity} slots, {steps} steps)", self.device,
                                pool=self._pool, log=self.log, reset=state.reset_indices)
            state.flow_runners[steps] = runner
        return runner

    # ----------------------------------------------------------------- steps
    def _decode_step(self, state: RowState, chooser: TokenChooser) -> None:
        """Feed state.token_in at slot state.position; choose and record the next tokens."""
        lm = self.step_language_model
        rows = state.rows
        position_ids = (state.position + state.rope_delta).reshape(1, 1, 1).expand(3, rows, 1)
        mask = torch.where(state.columns <= state.position, state.mask_open, state.mask_hidden)
        with official_autocast(self.device, self.dtype):
            embeds = lm.embed_tokens(state.token_in[:, None])
            hidden = lm(inputs_embeds=embeds, position_ids=position_ids,
                        attention_mask=mask.reshape(1, 1, 1, -1), past_key_values=state.cache,
                        cache_position=state.position.reshape(1), use_cache=True
                        ).last_hidden_state
            logits = self.network.vlm.lm_head(hidden[:, -1]).float()
        state.finite &= torch.isfinite(logits).all()
        state.record(chooser(logits, self.generator))

    def _flow_step(self, state: RowState, times: torch.Tensor, dt: float) -> None:
        """One Euler step x <- x + dt * v(x, t_k) with the actions in the last 64 slots.

        Guided state: one expert call over the guided rows and the unguided rows (the same
        x), then v = (1 - w) * v_unguided + w * v_guided (nav_guidance, FlowMatching's
        _guided_v)."""
        net = self.network
        x = torch.cat([state.x, state.x]) if state.guided else state.x
        t = times.index_select(0, state.flow_step.reshape(1)).expand(state.flow_rows)
        with official_autocast(self.device, self.dtype):
            embeds = net.action_in_proj(x, t)
            hidden = self.step_expert(
                inputs_embeds=embeds, position_ids=state.expert_positions,
                attention_mask=state.expert_mask, past_key_values=state.full_cache,
                cache_position=state.action_slots, use_cache=True).last_hidden_state
            velocity = net.action_out_proj(hidden).float()
        state.finite &= torch.isfinite(velocity).all()
        if state.guided:
            rows = state.rows
            velocity = (state.unguided_weight * velocity[rows:]
                        + state.guided_weight * velocity[:rows])
        state.x.copy_(state.x + dt * velocity)
        state.flow_step += 1

    # ----------------------------------------------------------------- vision
    def missing_frames(self, keys: Sequence[Hashable]) -> list[int]:
        """Indices of the frames to encode: the first frame of each key without cached
        features (every distinct key when vision reuse is off)."""
        cached = self._vision if self.config.vision_reuse else {}
        seen, missing = set(), []
        for index, key in enumerate(keys):
            if key not in seen and key not in cached:
                missing.append(index)
            seen.add(key)
        return missing

    def encode_images(self, pixel_values: torch.Tensor, grid: torch.Tensor
                      ) -> list[VisionFeatures]:
        """Vision encoder over the given frames: one VisionFeatures per frame."""
        if grid.shape[0] == 0:
            return []
        with official_autocast(self.device, self.dtype):
            embeds, deepstack = self.network.vlm.model.get_image_features(
                pixel_values.to(self.dtype), grid)
        sizes = [e.shape[0] for e in embeds]
        per_layer = [d.split(sizes) for d in deepstack]
        return [VisionFeatures(embeds[i], tuple(layer[i] for layer in per_layer))
                for i in range(len(sizes))]

    def frame_features(self, pixel_values: torch.Tensor, grid: torch.Tensor,
                       encoded: Sequence[int], keys: Optional[Sequence[Hashable]]
                       ) -> list[VisionFeatures]:
        """Features of all frames: encode the ``encoded`` ones (their patches are
        ``pixel_values``), take the others from the cache; keep only this call's frames."""
        fresh = self.encode_images(pixel_values, grid[list(encoded)])
        self.vision_stats["encoded"] += len(fresh)
        if keys is None:
            if len(fresh) != grid.shape[0]:
                raise ModelRuntimeError(f"without frame keys every frame is encoded: have "
                                        f"{len(fresh)} of {grid.shape[0]}")
            return fresh
        new = {keys[i]: f for i, f in zip(encoded, fresh)}
        try:
            features = [new[k] if k in new else self._vision[k] for k in keys]
        except KeyError as exc:
            raise ModelRuntimeError(f"no vision features for frame key {exc.args[0]!r}") from exc
        self.vision_stats["reused"] += len(keys) - len(fresh)
        if self.config.vision_reuse:
            self._vision = {k: f for k, f in zip(keys, features)}
        return features

    def clear_vision_cache(self) -> None:
        self._vision = {}

    # ----------------------------------------------------------------- stages
    def prefill(self, state: RowState, input_ids: torch.Tensor, grid: torch.Tensor,
                features: Sequence[VisionFeatures],
                rope: Optional[tuple[torch.Tensor, torch.Tensor]] = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Language-model prefill of the prompt (batch 1) into every row of the state's cache
        (with guidance, the unguided rows too: their prompt shares everything before the
        route span; see unguided_feed).

        rope: the prompt's (position_ids (3, 1, L), rope_deltas (1, 1)) if known, else
        computed with Qwen3VLModel.get_rope_index.
        Returns (last-position logits (1, vocab) float32, rope_deltas (1, 1) int64).
        """
        vlm = self.network.vlm.model
        if rope is None:
            rope = vlm.get_rope_index(input_ids, grid, None)
        position_ids, rope_deltas = rope
        embeds = vlm.get_input_embeddings()(input_ids)
        image_embeds = torch.cat([f.embeds for f in features]).to(embeds.device, embeds.dtype)
        deepstack = [torch.cat([f.deepstack[j] for f in features])
                     for j in range(len(features[0].deepstack))]
        image_mask, _ = vlm.get_placeholder_mask(input_ids, inputs_embeds=embeds,
                                                 image_features=image_embeds)
        embeds = embeds.masked_scatter(image_mask, image_embeds)
        with official_autocast(self.device, self.dtype):
            out = vlm.language_model(inputs_embeds=embeds, position_ids=position_ids,
                                     past_key_values=state.full_cache.prefill_writes(),
                                     use_cache=True, visual_pos_masks=image_mask[..., 0],
                                     deepstack_visual_embeds=deepstack)
            logits = self.network.vlm.lm_head(out.last_hidden_state[:, -1:, :])[:, 0].float()
        return logits, rope_deltas

    def stop_check_schedule(self) -> tuple[int, int]:
        """(decode steps between stop-status reads, reads kept in flight): every step, one
        in flight on CUDA (the GPU keeps a queued step while the host waits)."""
        interval = int(self.config.stop_check_interval)
        return interval, 1 if (self.device.type == "cuda" or interval > 1) else 0

    def decode(self, state: RowState, runner: StepRunner, chooser: TokenChooser,
               logits: torch.Tensor, prompt_len: int, rope_deltas: torch.Tensor,
               max_new_tokens: int, forced: Optional[torch.Tensor] = None
               ) -> tuple[int, int, int]:
        """CoC decode with the reference stop rule; returns (tokens kept, feeds, steps run).

        The first token comes from the prefill logits; each step feeds one token and
        chooses the next. Decoding stops one step after every row has chosen
        <|traj_future_start|> (so its KV is in the cache) or after max_new_tokens tokens
        (the last one is never fed).
        """
        if forced is not None:
            max_new_tokens = min(max_new_tokens, int(forced.numel()))
            forced = forced.to(self.device)[:max_new_tokens]
        state.begin_decode(prompt_len, rope_deltas, forced)
        state.finite &= torch.isfinite(logits).all()
        state.record(chooser(logits.expand(state.rows, -1).clone(), self.generator))
        limit = max_new_tokens - 1  # feeds at most (the last token is never fed)
        interval, lag = self.stop_check_schedule()
        reader = _StatusReader(self.device, state.rows, lag)
        reader.post(state.stop_status())
        steps, stop = 0, None
        while True:
            while reader.pending and (len(reader.pending) > reader.lag or steps >= limit):
                status = reader.take()
                if min(status) >= 0:
                    stop = max(status)
                    break
            if stop is not None or steps >= limit:
                break
            runner()
            steps += 1
            if steps % interval == 0 or steps == limit:
                reader.post(state.stop_status())
        feeds = limit if stop is None else min(stop + 1, limit)
        while steps < feeds:  # the stop was seen on the step that chose the last token
            runner()
            steps += 1
        kept = max_new_tokens if stop is None else stop + 1
        return kept, feeds, steps

    def unguided_feed(self, state: RowState, input_ids: torch.Tensor, route_start: int,
                      route_len: int, feeds: int, rope_deltas: torch.Tensor) -> None:
        """Fill the guided state's unguided rows: the prompt without its route span, then
        the reasoning fed to the guided rows (nav_guidance.unguided_context's cache).

        The tokens before ``<|route_start|>`` (images included) are the same in both
        prompts, with the same positions, so their keys and values are already there from
        the prefill; only the prompt's tail after ``<|route_end|>`` and the ``feeds`` fed
        CoC tokens go through the language model, from slot ``route_start`` on. Their
        positions are slot + rope_deltas: text after the last image, and removing a text
        span shifts the maximum position and the length alike, so the unguided prompt has
        the guided one's rope_deltas.
        """
        tail = input_ids[:, route_start + route_len:].expand(state.rows, -1)
        tokens = torch.cat([tail, state.tokens[:, :feeds]], dim=1)
        with official_autocast(self.device, self.dtype):
            nav_guidance.feed_tokens(self.network, state.unguided_cache.prefill_writes(
                route_start), tokens, rope_deltas.reshape(()))

    def sample_actions(self, state: RowState, runner: StepRunner, steps: int,
                       offsets: torch.Tensor, cache_len: int, rope_deltas: torch.Tensor,
                       noise: torch.Tensor, route_len: int = 0,
                       weight: float = 1.0) -> torch.Tensor:
        """Euler integration from ``noise`` (N, 64, 2); returns the actions (N, 64, 2) float32.

        Row i sees slots [0, min(offsets[i], cache_len)) and the 64 action slots. Guided
        state: unguided row i sees route_len slots fewer (offset and cache shorter by the
        span), its positions use offsets - route_len, and the velocity is
        (1 - weight) * v_unguided + weight * v_guided.
        """
        visible = offsets.clamp(max=cache_len)
        delta = rope_deltas.reshape(())
        positions = expert_position_ids(offsets, delta, NUM_WAYPOINTS)
        if state.guided:
            visible = torch.cat([visible, visible - route_len])
            positions = torch.cat([positions, expert_position_ids(offsets - route_len, delta,
                                                                  NUM_WAYPOINTS)], dim=1)
            state.guided_weight.fill_(float(weight))
            state.unguided_weight.fill_(1.0 - float(weight))
        columns = state.columns[None, :]
        hidden = (columns >= visible[:, None]) & (columns < state.action_start)
        hidden = hidden[:, None, None, :]
        if state.expert_mask.shape[2] != 1:  # causal among the action tokens
            query = torch.arange(NUM_WAYPOINTS, device=self.device)
            future = (columns - state.action_start) > query[:, None]
            hidden = hidden | future[None, None]
        state.expert_mask.copy_(torch.where(hidden, state.mask_hidden, state.mask_open)
                                .expand_as(state.expert_mask))
        state.expert_positions.copy_(positions)
        state.x.copy_(noise)
        state.flow_step.zero_()
        for _ in range(steps):
            runner()
        return state.x.clone()

    # ----------------------------------------------------------------- one call
    def chooser(self, request: Request) -> TokenChooser:
        ids = self.token_ids
        return TokenChooser(ids.traj_token_start, ids.traj_token_end, bool(request.sample),
                            float(request.temperature), float(request.top_p))

    def run(self, prepared: PreparedInputs, request: Request,
            lap: Lap = lambda stage: None) -> Prediction:
        """Vision (the frames in ``prepared.encoded()`` only; the others come from the
        vision cache by ``prepared.frame_keys``), prefill, CoC decode and flow matching."""
        with torch.inference_mode():  # the row states hold inference tensors
            return self._run(prepared, request, lap)

    def _run(self, prepared: PreparedInputs, request: Request, lap: Lap) -> Prediction:
        input_ids, grid = prepared.input_ids, prepared.image_grid_thw
        rows, steps = int(request.rows), int(request.diffusion_steps)
        max_new_tokens = int(request.max_new_tokens)
        chooser = self.chooser(request)
        prompt_len = int(input_ids.shape[1])
        guided = prepared.unguided_input_ids is not None and request.nav_guidance_scale != 0
        if guided and not 0 <= prepared.route_start < prompt_len:
            raise ModelRuntimeError("navigation guidance needs PreparedInputs.route_start "
                                    f"(have {prepared.route_start})")
        state = self.state_for(rows, prompt_len, max_new_tokens, guided)
        decode_runner = self.decode_runner(state, chooser)
        flow_runner = self.flow_runner(state, steps)
        if self.use_graphs:  # before the prefill: warm-up calls write into the cache
            decode_runner.capture()
            flow_runner.capture()
        features = self.frame_features(prepared.pixel_values, grid, prepared.encoded(),
                                       prepared.frame_keys)
        lap("vision")
        logits, rope_deltas = self.prefill(state, input_ids, grid, features, prepared.rope)
        lap("prefill")
        noise = seed_and_noise(self.generator, request, self.device)
        kept, feeds, steps_run = self.decode(state, decode_runner, chooser, logits, prompt_len,
                                             rope_deltas, max_new_tokens,
                                             request.forced_tokens)
        lap("coc_decode")
        cache_len = prompt_len + feeds
        offsets = torch.where(state.found, prompt_len + state.first_index + 1,
                              torch.full_like(state.first_index, cache_len + 1))
        if guided:
            self.unguided_feed(state, input_ids, prepared.route_start, prepared.route_len,
                               feeds, rope_deltas)
        actions = self.sample_actions(state, flow_runner, steps, offsets, cache_len,
                                      rope_deltas, noise, prepared.route_len,
                                      float(request.nav_guidance_scale))
        raise_if_not_finite(state.finite, "CoC logits or flow-matching velocities")
        lap("diffusion")
        return Prediction(actions=actions, tokens=state.tokens[:, :kept].clone(),
                          found=state.found.clone(), offsets=offsets,
                          rope_deltas=int(rope_deltas.reshape(-1)[0]), cache_len=cache_len,
                          path=self.path, decode_steps=steps_run)

    def capture_failures(self) -> list[str]:
        """One line per step that should run as a CUDA graph but does not (why)."""
        if not self.use_graphs:
            return []
        # Copies: /diagnostics asks from another thread while a call may add a state.
        return [f"{runner.name}: {runner.failure}" for state in list(self._states.values())
                for runner in (*list(state.decode_runners.values()),
                               *list(state.flow_runners.values()))
                if runner.failure is not None]

    def report(self) -> dict:
        """Row states, captured steps, capture failures and vision reuse counts."""
        states = []
        for state in self._states.values():
            runners = list(state.decode_runners.values()) + list(state.flow_runners.values())
            states.append(dict(rows=state.rows, guided=state.guided, capacity=state.capacity,
                               captured=[r.name for r in runners if r.captured],
                               uncaptured=[r.name for r in runners if not r.captured]))
        return dict(cuda_graphs=self.use_graphs, states=states,
                    capture_failures=self.capture_failures(),
                    vision=dict(self.vision_stats, cached_frames=len(self._vision)),
                    messages=list(self.log.messages))
