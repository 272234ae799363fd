"""Writes a tiny base-VLM processor directory of our own (tokenizer, chat template, image config).

It stands in for the Qwen3-VL base directory in tests, demos and CI, where the real
151k-token tokenizer is not available. It holds:

- a byte-level BPE tokenizer trained here with the ``tokenizers`` library on a small
  built-in corpus of driving phrases (a few hundred tokens), followed by Qwen's special
  tokens (``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>``, vision tokens, ...) as added
  special tokens, like the Qwen tokenizer keeps them after its BPE vocabulary;
- ``tokenizer.json``, ``vocab.json``, ``merges.txt``, ``tokenizer_config.json``,
  ``special_tokens_map.json``;
- ``chat_template.jinja``: our own template that renders the Qwen3-VL-Instruct layout
  (``<|im_start|>role\\n...<|im_end|>\\n``, one ``<|vision_start|><|image_pad|><|vision_end|>``
  per image);
- ``preprocessor_config.json`` of the Qwen2-VL image processor with the release's pixel
  bounds.

The model config (config.json) is written by the caller (tiny_checkpoint.py).
"""
from __future__ import annotations

import json
from pathlib import Path

__all__ = ["QWEN_SPECIAL_TOKENS", "TINY_CORPUS", "write_tiny_processor_files"]

# Qwen2/3 special tokens, in Qwen's order; they follow the BPE vocabulary.
QWEN_SPECIAL_TOKENS = (
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|object_ref_start|>",
    "<|object_ref_end|>", "<|box_start|>", "<|box_end|>", "<|quad_start|>", "<|quad_end|>",
    "<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>",
)

# A small corpus in the style of chain-of-causation reasoning and the system prompt.
TINY_CORPUS = (
    "You are a driving assistant that generates safe and accurate actions.",
    "output the chain-of-thought reasoning of the driving process, then output the future "
    "trajectory.",
    "Keep distance to the lead vehicle.",
    "Slow down because the traffic light ahead is red.",
    "Stop for the pedestrian crossing the road.",
    "Nudge to the left to avoid the parked car on the right.",
    "Follow the lane and keep a constant speed.",
    "Accelerate to merge into the traffic on the highway.",
    "Yield to the oncoming vehicle before turning left at the intersection.",
    "Change lanes to the right to take the next exit.",
    "Decelerate smoothly since the vehicle in front is braking.",
    "Keep the current lane; the road is clear ahead.",
    "Turn right at the junction after the cyclist has passed.",
    "Wait at the stop sign, then proceed when the intersection is clear.",
    "The construction zone narrows the road, so reduce speed and stay centered.",
    "A truck is cutting in from the left lane; brake gently and increase the gap.",
    "Go straight through the green light while watching for crossing pedestrians.",
    "Pull over to the shoulder to let the emergency vehicle pass.",
)

# Our own Jinja chat template with the Qwen3-VL-Instruct layout. Content may be a string or
# a list of items ({"type": "image"} / {"type": "text", "text": ...}).
CHAT_TEMPLATE = """\
{%- macro render_content(content) -%}
{%- if content is string -%}{{ content }}
{%- else -%}
{%- for item in content -%}
{%- if item.type == 'image' or 'image' in item or 'image_url' in item -%}
<|vision_start|><|image_pad|><|vision_end|>
{%- elif item.type == 'video' or 'video' in item -%}
<|vision_start|><|video_pad|><|vision_end|>
{%- elif 'text' in item -%}{{ item.text }}
{%- endif -%}
{%- endfor -%}
{%- endif -%}
{%- endmacro -%}
{%- for message in messages -%}
{{ '<|im_start|>' + message.role + '\\n' }}{{ render_content(message.content) }}
{{- '<|im_end|>\\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}
"""

# BPE vocabulary size before the special tokens (256 byte symbols + merges).
TINY_BPE_VOCAB_SIZE = 400


def _added_token_entry(content: str) -> dict:
    return {"content": content, "lstrip": False, "normalized": False, "rstrip": False,
            "single_word": False, "special": True}


def write_tiny_processor_files(out_dir, *, min_pixels: int = 163840,
                               max_pixels: int = 196608) -> dict:
    """Write the tiny processor directory into ``out_dir`` (created if needed).

    Returns a summary for the model config: base_vocab_size (len of the tokenizer before
    the Alpamayo extension) and the ids of <|endoftext|> (pad / bos), <|im_end|> (eos),
    <|vision_start|>, <|vision_end|>, <|image_pad|>, <|video_pad|>.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TINY_BPE_VOCAB_SIZE, min_frequency=1,
                                  show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator(list(TINY_CORPUS) * 2, trainer=trainer)
    base_bpe = tokenizer.get_vocab_size()
    tokenizer.add_special_tokens(list(QWEN_SPECIAL_TOKENS))
    tokenizer.save(str(out / "tokenizer.json"))
    tokenizer.model.save(str(out))  # vocab.json + merges.txt for slow-tokenizer readers

    ids = {tok: tokenizer.token_to_id(tok) for tok in QWEN_SPECIAL_TOKENS}
    (out / "added_tokens.json").write_text(json.dumps(ids, indent=2, sort_keys=True))
    tokenizer_config = {
        "added_tokens_decoder": {str(i): _added_token_entry(t) for t, i in ids.items()},
        "bos_token": None,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "extra_special_tokens": {},
        "model_max_length": 262144,
        "pad_token": "<|endoftext|>",
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    special_map = {"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"}
    (out / "special_tokens_map.json").write_text(json.dumps(
        {k: {key: val for key, val in _added_token_entry(v).items() if key != "special"}
         for k, v in special_map.items()}, indent=2))
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)
    preprocessor = {
        "image_processor_type": "Qwen2VLImageProcessorFast",
        "processor_class": "Qwen3VLProcessor",
        "patch_size": 16,
        "temporal_patch_size": 2,
        "merge_size": 2,
        "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5],
        "size": {"shortest_edge": int(min_pixels), "longest_edge": int(max_pixels)},
    }
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    return {
        "base_vocab_size": base_bpe + len(QWEN_SPECIAL_TOKENS),
        "pad_token_id": ids["<|endoftext|>"],
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|im_end|>"],
        "vision_start_token_id": ids["<|vision_start|>"],
        "vision_end_token_id": ids["<|vision_end|>"],
        "image_token_id": ids["<|image_pad|>"],
        "video_token_id": ids["<|video_pad|>"],
    }
