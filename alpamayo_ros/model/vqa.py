"""Visual question answering with Alpamayo 1.5 (the official ``generate_text``).

The prompt is prompt.PromptSpec(question=...) (images, ``<|question_start|>`` question
``<|question_end|>``, assistant turn opened with ``<|answer_start|>``); nothing is fused.
Decoding is greedy, which is what the official call with top_k=1 gives: unlike the
trajectory rollout no token is banned (a model may emit ``<iN>`` tokens), and it stops
after the end-of-turn token (``<|im_end|>``, the generation config's eos) or the token
limit, not at ``<|answer_end|>``. The answer is the text of the generated tokens before
the first ``<|answer_end|>``, stripped ("" without one).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from alpamayo_ros.model import generation
from alpamayo_ros.model.modeling import AlpamayoR1Network
from alpamayo_ros.model.prompt_1_5 import extract_answer


@dataclass
class GeneratedText:
    """tokens: (T,) generated ids (the eos included when reached); logits: (T, vocab)
    float32 raw logits of each step when asked for, else None; stopped_at_eos."""

    tokens: torch.Tensor
    logits: Optional[torch.Tensor]
    stopped_at_eos: bool


def generate_greedy(network: AlpamayoR1Network, input_ids: torch.Tensor,
                    pixel_values: torch.Tensor, image_grid_thw: torch.Tensor, eos_id: int,
                    max_new_tokens: int, forced_tokens: Optional[torch.Tensor] = None,
                    keep_logits: bool = False) -> GeneratedText:
    """Greedy decoding after one prefill of (1, L) ids; forced_tokens (T,) are fed instead
    of the argmax (checks), their logits still computed."""
    limit = int(max_new_tokens)
    if forced_tokens is not None:
        limit = min(limit, int(forced_tokens.numel()))
    cache = generation.PreallocatedKVCache(network.num_layers,
                                           int(input_ids.shape[1]) + limit, 1)
    prefilled = generation.prefill(network, input_ids, pixel_values, image_grid_thw, cache)
    logits, tokens, kept = prefilled.last_logits, [], []
    for step in range(limit):
        kept.append(logits[0])
        token = (forced_tokens.reshape(-1)[step].to(logits.device) if forced_tokens is not None
                 else logits[0].argmax())
        tokens.append(int(token))
        if tokens[-1] == eos_id or step + 1 == limit:
            break
        logits = generation._language_model_step(network, token.reshape(1), cache,
                                                 prefilled.rope_deltas, True)
    return GeneratedText(torch.tensor(tokens, dtype=torch.long),
                         torch.stack(kept) if keep_logits and kept else None,
                         bool(tokens) and tokens[-1] == eos_id)


def answer_text(tokenizer, tokens: torch.Tensor) -> str:
    """The answer in generated tokens (see the module docstring)."""
    return extract_answer(tokenizer.decode(tokens.tolist(), skip_special_tokens=False))
