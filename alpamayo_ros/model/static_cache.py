"""Fixed-shape KV cache and attention call of the fast inference path.

Layout of one cache of ``capacity`` slots per sample row (capacity is a multiple of 16):

    [0, L)                 prompt, written once by the prefill (batch 1, broadcast to all rows)
    [L, L + T - 1)         the fed CoC tokens, one slot per decode step
    ...                    unused slots (stale values of earlier calls, always masked)
    [capacity - 64, capacity)   the 64 action tokens of the flow-matching expert

Two ways to write. The prompt goes through :meth:`StaticKVCache.prefill_writes`, a view
that writes a contiguous range from slot 0 and returns only the written part, so it runs
through transformers' usual causal attention. Decode and expert steps write the cache
itself: ``index_copy_`` at device-side slot indices, the whole buffer returned, so a step
has the same tensor shapes and addresses every time and can be captured as a CUDA graph;
the caller's additive mask hides the slots that do not belong to the current sequence. The
buffers start zeroed: a masked slot must hold finite numbers, because masking is additive
and NaN * 0 is NaN.

Attention of static steps goes through :func:`grouped_query_sdpa`, registered with
transformers' AttentionInterface and used by *attention twins* of the language model and
the expert (:func:`with_attention`: the same weights, a model instance built for that
attention; the Qwen3-VL attention layers themselves are reused). Why not transformers' SDPA
call: with an attention mask it expands the 8 KV heads to the 32 query heads
(``repeat_kv``), which copies the whole fixed-size cache of every layer on every step;
folding the query heads of a KV group into the query axis gives the same products without
that copy.
"""
from __future__ import annotations

from typing import Any, Optional

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from transformers.cache_utils import Cache, CacheLayerMixin

from alpamayo_ros.core.errors import ModelRuntimeError

GROUPED_SDPA = "alpamayo_grouped_sdpa"
# Slot counts are rounded up to this multiple: fused attention kernels want the key axis of
# an additive mask aligned, and nearby prompt lengths then share one capacity.
CAPACITY_ALIGN = 16


def round_capacity(slots: int) -> int:
    """``slots`` rounded up to a multiple of CAPACITY_ALIGN."""
    return -(-int(slots) // CAPACITY_ALIGN) * CAPACITY_ALIGN



def append_to_layer(layer, key_states: torch.Tensor, value_states: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Write the new tokens after the `layer.length` cached ones of a preallocated cache
    layer (keys/values of `layer.capacity` slots, `layer.rows` rows) and return the
    filled part. A batch-1 write (the prompt) is broadcast into every sample row."""
    start, count = layer.length, key_states.shape[-2]
    end = start + count
    if end > layer.capacity:
        raise ModelRuntimeError(
            f"KV cache overflow: have room for {layer.capacity} tokens, need {end}")
    batch = key_states.shape[0]
    if batch not in (1, layer.rows):
        raise ModelRuntimeError(f"KV cache has {layer.rows} rows, got a batch of {batch}")
    layer.keys[:, :, start:end] = key_states
    layer.values[:, :, start:end] = value_states
    layer.length = end
    return layer.keys[:batch, :, :end], layer.values[:batch, :, :end]


class StaticKVLayer(CacheLayerMixin):
    """One layer's keys and values: two zeroed (rows, kv_heads, capacity, head_dim) buffers,
    written at device-side slots (``cache_kwargs["cache_position"]``) and always returned
    whole, so a step has the same shapes and addresses every time."""

    is_compileable = False
    is_sliding = False

    def __init__(self, rows: int, capacity: int, kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device,
                 buffers: Optional[tuple[torch.Tensor, torch.Tensor]] = None) -> None:
        super().__init__()
        shape = (rows, kv_heads, capacity, head_dim)
        if buffers is None:
            buffers = (torch.zeros(shape, dtype=dtype, device=device),
                       torch.zeros(shape, dtype=dtype, device=device))
        self.keys, self.values = buffers
        self.dtype, self.device = dtype, device
        self.is_initialized = True
        self.rows, self.capacity = rows, capacity

    def row_view(self, start: int, stop: int) -> "StaticKVLayer":
        """A layer over rows [start, stop) of these buffers (views: writes land here)."""
        keys, values = self.keys[start:stop], self.values[start:stop]
        return StaticKVLayer(stop - start, self.capacity, keys.shape[1], keys.shape[3],
                             self.dtype, self.device, buffers=(keys, values))

    def lazy_initialization(self, key_states: torch.Tensor) -> None:  # buffers exist already
        return None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor,
               cache_kwargs: Optional[dict[str, Any]] = None):
        slots = cache_kwargs["cache_position"]
        # The cast is a no-op except under autocast, where the expert's rotated keys come
        # out float32 (float32 rotary tables); SDPA would round them to the cache dtype.
        self.keys.index_copy_(2, slots, key_states.to(self.dtype))
        self.values.index_copy_(2, slots, value_states.to(self.dtype))
        return self.keys, self.values

    def get_mask_sizes(self, cache_position: torch.Tensor) -> tuple[int, int]:
        return self.capacity, 0

    def get_seq_length(self) -> int:
        return self.capacity

    def get_max_cache_shape(self) -> int:
        return self.capacity


class PrefillLayer(CacheLayerMixin):
    """The prompt's writes into a StaticKVLayer's buffers: contiguous from slot 0, only
    the written part returned (so the prompt runs through the usual causal attention)."""

    is_compileable = False
    is_sliding = False

    def __init__(self, layer: StaticKVLayer) -> None:
        super().__init__()
        self.keys, self.values = layer.keys, layer.values
        self.dtype, self.device = layer.dtype, layer.device
        self.is_initialized = True
        self.rows, self.capacity = layer.rows, layer.capacity
        self.length = 0

    def lazy_initialization(self, key_states: torch.Tensor) -> None:
        return None

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor,
               cache_kwargs: Optional[dict[str, Any]] = None):
        return append_to_layer(self, key_states, value_states)

    def get_mask_sizes(self, cache_position: torch.Tensor) -> tuple[int, int]:
        return self.length + cache_position.shape[0], 0

    def get_seq_length(self) -> int:
        return self.length

    def get_max_cache_shape(self) -> int:
        return self.capacity


class StaticKVCache(Cache):
    """A transformers Cache of ``StaticKVLayer``s for ``rows`` sample rows (static writes:
    decode and expert steps); :meth:`prefill_writes` gives the prompt's view of it."""

    def __init__(self, num_layers: int, rows: int, capacity: int, kv_heads: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device,
                 layers: Optional[list[StaticKVLayer]] = None) -> None:
        if capacity % CAPACITY_ALIGN:
            raise ModelRuntimeError(f"cache capacity must be a multiple of {CAPACITY_ALIGN}, "
                                    f"have {capacity}")
        if layers is None:
            layers = [StaticKVLayer(rows, capacity, kv_heads, head_dim, dtype, device)
                      for _ in range(num_layers)]
        super().__init__(layers=layers)
        self.rows, self.capacity = rows, capacity

    def row_view(self, start: int, stop: int) -> "StaticKVCache":
        """A cache over rows [start, stop) of this one's buffers (no copy: its writes land
        in this cache, and a step that uses it has fixed addresses as well)."""
        first = self.layers[0]
        return StaticKVCache(len(self.layers), stop - start, self.capacity, first.keys.shape[1],
                             first.keys.shape[3], first.dtype, first.device,
                             layers=[layer.row_view(start, stop) for layer in self.layers])

    def prefill_writes(self, start: int = 0) -> Cache:
        """A Cache over the same buffers that writes contiguously from slot ``start`` (the
        slots before it are attended to as they are) and counts the slots written; a new
        one per prompt. A batch-1 write goes into every row."""
        cache = Cache(layers=[PrefillLayer(layer) for layer in self.layers])
        for layer in cache.layers:
            layer.length = int(start)
        return cache

    def memory_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for layer in self.layers
                   for t in (layer.keys, layer.values))


def grouped_query_sdpa(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor,
                       value: torch.Tensor, attention_mask: Optional[torch.Tensor],
                       dropout: float = 0.0, scaling: Optional[float] = None,
                       is_causal: Optional[bool] = None, **kwargs) -> tuple[torch.Tensor, None]:
    """Attention of a static step, the same result as transformers' SDPA call.

    query: (B, Hq, Q, D); key/value: (B, Hkv, K, D) with Hq = g * Hkv, query head h using KV
    head h // g (transformers' repeat_kv order); attention_mask: additive (B or 1, 1, Q or 1,
    K). The g query heads of a KV head become g * Q rows of one attention problem, so the KV
    buffers are read in place. Returns (B, Q, Hq, D) as the attention layers expect.
    """
    if attention_mask is None:
        raise ModelRuntimeError("grouped_query_sdpa needs an attention mask (static steps "
                                "always pass one)")
    groups = query.shape[1] // key.shape[1]
    kv_len = key.shape[2]
    # g: the query heads that share one KV head (head h uses KV head h // g).
    grouped = rearrange(query, "b (kv g) q d -> b kv (g q) d", g=groups)
    mask = attention_mask[..., :kv_len]
    if mask.shape[2] == 1:  # one mask row for every query: a broadcast view, no copy
        mask = mask.expand(-1, -1, grouped.shape[2], -1)
    else:
        mask = repeat(mask, "b one q k -> b one (g q) k", g=groups)
    out = F.scaled_dot_product_attention(grouped, key, value, attn_mask=mask, dropout_p=0.0,
                                         scale=scaling)
    return rearrange(out, "b kv (g q) d -> b q (kv g) d", g=groups).contiguous(), None


def register_grouped_sdpa() -> None:
    """Register :func:`grouped_query_sdpa` under GROUPED_SDPA (idempotent)."""
    from transformers import AttentionInterface

    AttentionInterface.register(GROUPED_SDPA, grouped_query_sdpa)


def with_attention(model: torch.nn.Module, name: str) -> torch.nn.Module:
    """A second transformers text model that shares every weight and module-level buffer
    of ``model`` (no memory) but whose attention layers call attention ``name``.

    Built from a copy of the model's config made with the public ``attn_implementation``
    argument: the attention function is a property of the model instance, so the static
    steps get their own instance instead of switching the shared one's configuration.
    """
    if name == GROUPED_SDPA:
        register_grouped_sdpa()
    config = type(model.config).from_dict(model.config.to_dict(), attn_implementation=name)
    with torch.device("meta"):
        twin = type(model)(config)
    if getattr(model, "embed_tokens", True) is None:  # the expert reads embeddings only
        twin.embed_tokens = None
    twin.load_state_dict(model.state_dict(), strict=True, assign=True)
    twin.rotary_emb = model.rotary_emb  # its inverse frequencies are not in the state dict
    twin.eval()
    twin.requires_grad_(False)
    left = [n for n, t in list(twin.named_parameters()) + list(twin.named_buffers()) if t.is_meta]
    if left:
        raise ModelRuntimeError(f"attention twin of {type(model).__name__} left tensors on "
                                f"the meta device: {left[:4]}")
    return twin
