"""Tokenizer extension and checks, the chat prompt, history tokens and CoC extraction.

Both families (R1 and 1.5) use this prompt; 1.5 may add camera labels, a navigation
instruction, or ask a question instead (``PromptSpec``; the pieces are in prompt_1_5.py).
Alpamayo-R1 extends the base Qwen3-VL tokenizer, in this order, with ``<i0>`` ..
``<i{traj_vocab_size-1}>`` (plain added tokens: 3000 future-trajectory bins, then 1000
history bins) and then 29 special ``<|...|>`` tokens (``<|image_pad|>`` already exists and
keeps its id). The prompt is the Qwen3-VL-Instruct chat layout: a system text, a user turn
with the 16 images followed by the history placeholders and the instruction, and an open
assistant turn that starts with ``<|cot_start|>``. The 48 ``<|traj_history|>`` placeholders
are then replaced by binned history deltas ("fusion").

Everything loads from local directories only (no hub access, no remote code).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch

from alpamayo_ros.core.errors import CheckpointError, ModelInputError
from alpamayo_ros.core.model_family import ALPAMAYO_1_5
from alpamayo_ros.model.prompt_1_5 import (QUESTION_END, QUESTION_START,
                                           SPECIAL_TOKEN_NAMES_1_5, image_content,
                                           route_section)

__all__ = [
    "SYSTEM_PROMPT",
    "INSTRUCTION",
    "SPECIAL_TOKEN_NAMES",
    "TRAJ_TOKEN_NAMES",
    "TokenIds",
    "PromptSpec",
    "load_extended_tokenizer",
    "tokenizer_expectations_from_config",
    "history_token_bins",
    "render_prompt_text",
    "build_unfused_input_ids",
    "fuse_history_tokens",
    "build_input_ids",
    "extract_coc",
]

SYSTEM_PROMPT = "You are a driving assistant that generates safe and accurate actions."
INSTRUCTION = ("output the chain-of-thought reasoning of the driving process, "
               "then output the future trajectory.")
NUM_HISTORY_TOKENS = 48

# Names k of the special tokens <|k|>, in the order the official R1 code adds them (1.5:
# prompt_1_5.SPECIAL_TOKEN_NAMES_1_5, same ids).
SPECIAL_TOKEN_NAMES = (
    "prompt_start", "prompt_end", "image_start", "image_pre_tkn", "image_end",
    "traj_history_start", "traj_history_pre_tkn", "traj_history_end", "cot_start", "cot_end",
    "meta_action_start", "meta_action_end", "traj_future_start", "traj_future_pre_tkn",
    "traj_future_end", "traj_history", "traj_future", "image_pad", "vectorized_wm",
    "vectorized_wm_start", "vectorized_wm_end", "vectorized_wm_pre_tkn", "route_start",
    "route_pad", "route_end", "question_start", "question_end", "answer_start", "answer_end",
)
# Keys of the checkpoint config's ``traj_token_ids`` and the token each one names.
TRAJ_TOKEN_NAMES = {
    "history": "<|traj_history|>",
    "future": "<|traj_future|>",
    "history_start": "<|traj_history_start|>",
    "future_start": "<|traj_future_start|>",
    "history_end": "<|traj_history_end|>",
    "future_end": "<|traj_future_end|>",
}

# History delta binning (DeltaTrajectoryTokenizer defaults): metres per axis, bin count.
HISTORY_XYZ_MIN = (-4.0, -4.0, -10.0)
HISTORY_XYZ_MAX = (4.0, 4.0, 10.0)
HISTORY_NUM_BINS = 1000
# Bins of the future-trajectory tokenizer that precede the history bins among <iN>.
FUTURE_NUM_BINS = 3000


@dataclass(frozen=True)
class TokenIds:
    """Token ids the model code needs, read from the extended tokenizer.

    traj_token_start: id of ``<i0>``; hist_token_start: id of history bin 0 (= traj_token_start
    + the future bin count); traj_vocab_size: number of ``<iN>`` tokens; vocab_size:
    len(tokenizer) after the extension (= rows of the embedding table).
    """

    image_pad: int
    vision_start: int
    vision_end: int
    traj_history_start: int
    traj_history: int
    traj_history_end: int
    cot_start: int
    cot_end: int
    traj_future_start: int
    pad: int
    im_end: int
    traj_token_start: int
    hist_token_start: int
    traj_vocab_size: int
    vocab_size: int
    # Route (navigation) and question/answer markers: same ids in both families.
    route_start: int = -1
    route_end: int = -1
    answer_end: int = -1

    @property
    def traj_token_end(self) -> int:
        """One past the id of the last ``<iN>`` token (exclusive end of the range)."""
        return self.traj_token_start + self.traj_vocab_size


def tokenizer_expectations_from_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments for :func:`load_extended_tokenizer` from a checkpoint config.json.

    Returns traj_vocab_size, expected_traj_token_start, expected_traj_token_ids,
    expected_vocab_size, future_num_bins (``traj_tokenizer_cfg.num_bins`` when present) and
    the family's special_token_names.
    """
    missing = [k for k in ("traj_vocab_size", "traj_token_start_idx", "traj_token_ids",
                           "vocab_size") if k not in cfg]
    if missing:
        raise CheckpointError(f"checkpoint config lacks {missing}")
    future_bins = (cfg.get("traj_tokenizer_cfg") or {}).get("num_bins", FUTURE_NUM_BINS)
    return dict(traj_vocab_size=int(cfg["traj_vocab_size"]),
                expected_traj_token_start=int(cfg["traj_token_start_idx"]),
                expected_traj_token_ids={k: int(v) for k, v in cfg["traj_token_ids"].items()},
                expected_vocab_size=int(cfg["vocab_size"]),
                future_num_bins=int(future_bins),
                special_token_names=(SPECIAL_TOKEN_NAMES_1_5
                                     if cfg.get("model_type") == ALPAMAYO_1_5
                                     else SPECIAL_TOKEN_NAMES))


def _single_id(tokenizer, token: str) -> int:
    """Id of a token that must exist as one vocabulary entry."""
    ids = tokenizer.convert_tokens_to_ids([token])
    tid = ids[0] if ids else None
    if tid is None or tid == tokenizer.unk_token_id:
        raise CheckpointError(f"tokenizer has no token {token!r}")
    return int(tid)


def load_extended_tokenizer(processor_dir, *, traj_vocab_size: int = 4000,
                            expected_traj_token_start: Optional[int] = None,
                            expected_traj_token_ids: Optional[Mapping[str, int]] = None,
                            expected_vocab_size: Optional[int] = None,
                            future_num_bins: int = FUTURE_NUM_BINS,
                            special_token_names: Sequence[str] = SPECIAL_TOKEN_NAMES):
    """Load the base-VLM tokenizer from a local directory and extend it like the official code.

    Adds ``<i0>``..``<i{traj_vocab_size-1}>`` then the special tokens
    ``special_token_names`` (R1: :data:`SPECIAL_TOKEN_NAMES`; ``<|image_pad|>`` is not
    re-added), then checks the ids
    against the given expectations (the checkpoint config's ``traj_token_start_idx``,
    ``traj_token_ids`` and ``vocab_size``). A mismatch means the checkpoint was trained with
    other token ids; running it would feed it wrong tokens, so it raises CheckpointError.
    Returns (tokenizer, TokenIds).
    """
    from transformers import AutoTokenizer  # heavy import, only when a model is loaded

    directory = Path(processor_dir)
    if not directory.is_dir():
        raise CheckpointError(f"processor directory {directory} does not exist")
    if not (directory / "tokenizer.json").is_file() and not (directory / "vocab.json").is_file():
        raise CheckpointError(f"no tokenizer files (tokenizer.json / vocab.json) in {directory}")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True,
                                                  trust_remote_code=False)
    except Exception as exc:  # the tokenizers library raises plain Exception, e.g.
        # "key must be a string at line 1 column 2" for a damaged tokenizer.json
        raise CheckpointError(f"cannot load the tokenizer from {directory}: "
                              f"{' '.join(str(exc).split())}") from exc
    if not getattr(tokenizer, "chat_template", None):
        raise CheckpointError(f"tokenizer in {directory} has no chat template "
                              f"(chat_template.jinja or tokenizer_config.json)")
    base_size = len(tokenizer)

    traj_tokens = [f"<i{v}>" for v in range(traj_vocab_size)]
    added = tokenizer.add_tokens(traj_tokens)
    if added != traj_vocab_size:
        raise CheckpointError(f"base tokenizer already holds some <iN> tokens: added {added} "
                              f"of {traj_vocab_size}")
    traj_token_start = _single_id(tokenizer, "<i0>")
    last = _single_id(tokenizer, traj_tokens[-1])
    if last != traj_token_start + traj_vocab_size - 1:
        raise CheckpointError(f"<iN> ids are not contiguous: <i0> is {traj_token_start}, "
                              f"{traj_tokens[-1]} is {last}")
    # add_tokens skips tokens that already exist (<|image_pad|>), as the official code relies on.
    tokenizer.add_tokens([f"<|{k}|>" for k in special_token_names], special_tokens=True)

    special = {k: _single_id(tokenizer, f"<|{k}|>") for k in special_token_names}
    traj_ids = {k: _single_id(tokenizer, tok) for k, tok in TRAJ_TOKEN_NAMES.items()}
    vocab_size = len(tokenizer)

    problems = []
    if expected_traj_token_start is not None and traj_token_start != expected_traj_token_start:
        problems.append(f"traj_token_start_idx (<i0>): have {traj_token_start}, need "
                        f"{expected_traj_token_start}")
    if expected_traj_token_ids is not None:
        for key, need in expected_traj_token_ids.items():
            have = traj_ids.get(key)
            if have != int(need):
                problems.append(f"traj_token_ids[{key!r}]: have {have}, need {need}")
    if expected_vocab_size is not None and vocab_size != expected_vocab_size:
        problems.append(f"vocab_size: have {vocab_size} (base {base_size} + "
                        f"{vocab_size - base_size} added), need {expected_vocab_size}")
    if future_num_bins + HISTORY_NUM_BINS > traj_vocab_size:
        problems.append(f"traj_vocab_size: have {traj_vocab_size}, need at least "
                        f"{future_num_bins + HISTORY_NUM_BINS} (future + history bins)")
    if problems:
        raise CheckpointError(f"tokenizer in {directory} does not match the checkpoint: "
                              + "; ".join(problems))

    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        pad_id = _single_id(tokenizer, "<|endoftext|>")
    ids = TokenIds(
        image_pad=special["image_pad"],
        vision_start=_single_id(tokenizer, "<|vision_start|>"),
        vision_end=_single_id(tokenizer, "<|vision_end|>"),
        traj_history_start=special["traj_history_start"],
        traj_history=special["traj_history"],
        traj_history_end=special["traj_history_end"],
        cot_start=special["cot_start"],
        cot_end=special["cot_end"],
        traj_future_start=special["traj_future_start"],
        pad=int(pad_id),
        im_end=_single_id(tokenizer, "<|im_end|>"),
        traj_token_start=traj_token_start,
        hist_token_start=traj_token_start + future_num_bins,
        traj_vocab_size=traj_vocab_size,
        vocab_size=vocab_size,
        route_start=special["route_start"],
        route_end=special["route_end"],
        answer_end=special["answer_end"],
    )
    return tokenizer, ids


def history_token_bins(history_xyz) -> np.ndarray:
    """Bins (0..999) of the history position deltas, interleaved x, y, z per pose.

    history_xyz: (16, 3) or (B, 16, 3) positions in the t0 frame [m], oldest first. The
    origin is prepended, so the first delta is the oldest position itself. Per axis
    bin = clamp(round((d - min) / (max - min) * 999), 0, 999) with min (-4, -4, -10) m and
    max (4, 4, 10) m, computed in float32 with round half to even (as torch.round in the
    official tokenizer). Returns int64 (48,) or (B, 48).
    """
    xyz = torch.as_tensor(np.asarray(history_xyz), dtype=torch.float32)
    single = xyz.ndim == 2
    if single:
        xyz = xyz.unsqueeze(0)
    if xyz.ndim != 3 or xyz.shape[-1] != 3:
        raise ModelInputError(f"history_xyz must be (T, 3) or (B, T, 3), have "
                              f"{tuple(xyz.shape)}")
    if not torch.isfinite(xyz).all():
        raise ModelInputError("history_xyz holds non-finite values")
    padded = torch.nn.functional.pad(xyz, (0, 0, 1, 0))
    delta = padded[:, 1:] - padded[:, :-1]
    lo = torch.tensor(HISTORY_XYZ_MIN, dtype=torch.float32)
    hi = torch.tensor(HISTORY_XYZ_MAX, dtype=torch.float32)
    scaled = (delta - lo) / (hi - lo)
    bins = torch.round(scaled * (HISTORY_NUM_BINS - 1)).long().clamp(0, HISTORY_NUM_BINS - 1)
    bins = bins.reshape(bins.shape[0], -1).numpy()
    return bins[0] if single else bins


@dataclass(frozen=True)
class PromptSpec:
    """What the prompt says besides the images (hashable: a prompt cache key).

    camera_indices: label every image with its camera's display name and frame number
        (1.5; None: no labels, the R1 prompt); nav_text: navigation instruction in a route
        span (1.5; None: none); question: a VQA prompt with this question instead of the
        driving prompt (1.5; no history placeholders, the assistant turn opens with
        ``<|answer_start|>``).
    """

    camera_indices: Optional[tuple[int, ...]] = field(default=None)
    nav_text: Optional[str] = None
    question: Optional[str] = None


def _chat_messages(num_images: int, spec: PromptSpec = PromptSpec()) -> list[dict]:
    """The conversation of the official ``create_message`` (or ``create_vqa_message``):
    images, history placeholders, route, instruction."""
    if spec.question is not None:
        user_text = f"{QUESTION_START}{spec.question}{QUESTION_END}"
        assistant = "<|answer_start|>"
    else:
        user_text = ("<|traj_history_start|>" + "<|traj_history|>" * NUM_HISTORY_TOKENS
                     + "<|traj_history_end|>" + route_section(spec.nav_text) + INSTRUCTION)
        assistant = "<|cot_start|>"
    return [
        {"role": "system", "content": [{"type": "text", "text": SYSTEM_PROMPT}]},
        {"role": "user",
         "content": image_content(num_images, spec.camera_indices)
         + [{"type": "text", "text": user_text}]},
        {"role": "assistant", "content": [{"type": "text", "text": assistant}]},
    ]


def render_prompt_text(tokenizer, num_images: int = 16, spec: PromptSpec = PromptSpec()) -> str:
    """The chat prompt as text, one ``<|image_pad|>`` per image, ending in ``<|cot_start|>``
    (``<|answer_start|>`` for a question).

    Uses the tokenizer's own chat template with continue_final_message=True, so the
    assistant turn stays open (no trailing ``<|im_end|>``).
    """
    if num_images < 1:
        raise ModelInputError(f"the prompt needs at least one image, have {num_images}")
    return tokenizer.apply_chat_template(_chat_messages(num_images, spec), tokenize=False,
                                         add_generation_prompt=False,
                                         continue_final_message=True)


def build_unfused_input_ids(tokenizer, ids: TokenIds, image_grid_thw,
                            merge_size: int = 2,
                            spec: PromptSpec = PromptSpec()) -> torch.LongTensor:
    """(1, L) prompt ids with image pads expanded and the history placeholders still in.

    Image i gets grid_t*grid_h*grid_w / merge_size^2 ``<|image_pad|>`` tokens, as the
    Qwen3-VL processor expands them.
    """
    grid = torch.as_tensor(image_grid_thw).to("cpu", torch.int64)
    if grid.ndim != 2 or grid.shape[1] != 3 or grid.shape[0] < 1:
        raise ModelInputError(f"image_grid_thw must be (N, 3), have {tuple(grid.shape)}")
    counts = (grid.prod(dim=1) // (merge_size ** 2)).tolist()
    text = render_prompt_text(tokenizer, num_images=len(counts), spec=spec)
    pad = "<|image_pad|>"
    pieces = text.split(pad)
    if len(pieces) != len(counts) + 1:
        raise ModelInputError(f"rendered prompt has {len(pieces) - 1} image pads, need "
                              f"{len(counts)}")
    expanded = pieces[0] + "".join(pad * n + rest for n, rest in zip(counts, pieces[1:]))
    input_ids = tokenizer(expanded, return_tensors="pt")["input_ids"]
    n_pads = int((input_ids == ids.image_pad).sum())
    if n_pads != sum(counts):
        raise ModelInputError(f"tokenized prompt has {n_pads} image pad tokens, need "
                              f"{sum(counts)}")
    return input_ids.long()


def fuse_history_tokens(input_ids: torch.Tensor, ids: TokenIds,
                        history_xyz) -> torch.LongTensor:
    """Replace the ``<|traj_history|>`` slots of (B, L) ids with history bin tokens.

    history_xyz: (16, 3) for every row, or (B, 16, 3). Token id = hist_token_start + bin.
    """
    bins = torch.from_numpy(np.atleast_2d(history_token_bins(history_xyz)))
    tokens = (bins + ids.hist_token_start).to(input_ids.device)
    slots = input_ids == ids.traj_history
    per_row = slots.sum(dim=1)
    if tokens.shape[0] == 1 and input_ids.shape[0] > 1:
        tokens = tokens.expand(input_ids.shape[0], -1)
    if tokens.shape[0] != input_ids.shape[0] or bool((per_row != tokens.shape[1]).any()):
        raise ModelInputError(f"history slots per row: have {per_row.tolist()}, need "
                              f"{tokens.shape[1]} for {tokens.shape[0]} row(s)")
    return input_ids.masked_scatter(slots, tokens.reshape(-1).to(input_ids.dtype))


def build_input_ids(tokenizer, ids: TokenIds, image_grid_thw, history_xyz,
                    merge_size: int = 2, spec: PromptSpec = PromptSpec()) -> torch.LongTensor:
    """(1, L) final prompt ids: chat template rendered, image pads expanded, history fused."""
    unfused = build_unfused_input_ids(tokenizer, ids, image_grid_thw, merge_size, spec)
    return fuse_history_tokens(unfused, ids, history_xyz)


def extract_coc(tokenizer, ids: TokenIds, sequence) -> str:
    """The chain-of-causation text of one token sequence.

    Takes the tokens after the first ``<|cot_start|>`` (or from the start when the sequence
    holds only generated tokens) up to the first ``<|cot_end|>``, decodes and strips them.
    Returns "" when ``<|cot_end|>`` is missing (generation stopped early).
    """
    seq = torch.as_tensor(np.asarray(sequence) if not isinstance(sequence, torch.Tensor)
                          else sequence).to("cpu", torch.int64)
    if seq.ndim == 2 and seq.shape[0] == 1:
        seq = seq[0]
    if seq.ndim != 1:
        raise ModelInputError(f"extract_coc takes one sequence (L,) or (1, L), have "
                              f"{tuple(seq.shape)}")
    tokens: Sequence[int] = seq.tolist()
    start = tokens.index(ids.cot_start) + 1 if ids.cot_start in tokens else 0
    try:
        end = tokens.index(ids.cot_end, start)
    except ValueError:
        return ""
    return tokenizer.decode(tokens[start:end], skip_special_tokens=False).strip()
