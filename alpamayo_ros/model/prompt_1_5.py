"""The prompt pieces Alpamayo 1.5 adds to the R1 prompt (official helper.py / nav_utils.py).

* Camera labels: before the first frame of each camera a text item ``"<display name>: "``
  and before every frame ``"frame <i> "`` (i counts the frames of a camera from 0 and
  restarts only when the camera id differs from the previous image's, so a repeated id
  keeps counting). The chat template joins the items with no separator.
* Navigation: ``<|route_start|>`` + text + ``<|route_end|>`` between
  ``<|traj_history_end|>`` and the instruction.
* The unguided prompt of classifier-free guidance: the fused ids with the route span
  (inclusive) removed.
* VQA: the answer is the text before the first ``<|answer_end|>`` of the generated tokens,
  stripped ("" without one).

Only plain data here; prompt.py renders and tokenizes.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch

from alpamayo_ros.core.errors import ModelInputError
from alpamayo_ros.core.model_family import camera_display_name
from alpamayo_ros.core.types import FRAMES_PER_CAMERA

# The 29 special tokens of 1.5 (models/base_model.py SPECIAL_TOKENS_KEYS): the R1 list with
# nine unused ones renamed to padding placeholders; same positions, so the same ids.
SPECIAL_TOKEN_NAMES_1_5 = (
    "prompt_start", "prompt_end", "image_start", "_padding_0", "image_end",
    "traj_history_start", "_padding_1", "traj_history_end", "cot_start", "cot_end",
    "_padding_2", "_padding_3", "traj_future_start", "_padding_4", "traj_future_end",
    "traj_history", "traj_future", "image_pad", "_padding_5", "_padding_6", "_padding_7",
    "_padding_8", "route_start", "route_pad", "route_end", "question_start", "question_end",
    "answer_start", "answer_end",
)
ROUTE_START = "<|route_start|>"
ROUTE_END = "<|route_end|>"
QUESTION_START = "<|question_start|>"
QUESTION_END = "<|question_end|>"
ANSWER_END = "<|answer_end|>"


def image_content(num_images: int, camera_indices: Optional[Sequence[int]] = None,
                  frames_per_camera: int = FRAMES_PER_CAMERA) -> list[dict]:
    """The image items of the user turn, labelled when ``camera_indices`` is given.

    num_images must then be len(camera_indices) * frames_per_camera (frames camera-major).
    """
    if camera_indices is None:
        return [{"type": "image"} for _ in range(num_images)]
    cameras = [int(i) for i in camera_indices]
    if num_images != len(cameras) * frames_per_camera:
        raise ModelInputError(f"{num_images} images do not fit {len(cameras)} cameras x "
                              f"{frames_per_camera} frames")
    content: list[dict] = []
    previous, frame = None, 0
    for image in range(num_images):
        camera = cameras[image // frames_per_camera]
        if previous is not None and camera != previous:
            frame = 0
        if frame == 0:
            content.append({"type": "text", "text": f"{camera_display_name(camera)}: "})
        content.append({"type": "text", "text": f"frame {frame} "})
        content.append({"type": "image"})
        previous, frame = camera, frame + 1
    return content


def route_section(nav_text: Optional[str]) -> str:
    """``<|route_start|>text<|route_end|>``, or "" without an instruction."""
    return "" if nav_text is None else f"{ROUTE_START}{nav_text}{ROUTE_END}"


def route_span(input_ids: torch.Tensor, route_start: int, route_end: int
               ) -> Optional[tuple[int, int]]:
    """(start, end) positions of the first ``<|route_start|>`` and the next
    ``<|route_end|>`` in a (L,) or (1, L) id row, or None when the row has no route."""
    row = input_ids.reshape(-1)
    starts = (row == route_start).nonzero()
    if starts.numel() == 0:
        return None
    start = int(starts[0, 0])
    ends = (row[start:] == route_end).nonzero()
    if ends.numel() == 0:
        raise ModelInputError("the prompt has <|route_start|> without <|route_end|>")
    return start, start + int(ends[0, 0])


def remove_route_span(input_ids: torch.Tensor, route_start: int, route_end: int
                      ) -> tuple[torch.Tensor, int]:
    """(ids without the route span, span length) for (1, L) ids; the span is removed
    inclusive of both markers (official nav_utils.remove_nav_text). Unchanged, 0 without
    a route."""
    span = route_span(input_ids, route_start, route_end)
    if span is None:
        return input_ids, 0
    start, end = span
    kept = torch.cat([input_ids[..., :start], input_ids[..., end + 1:]], dim=-1)
    return kept, end + 1 - start


def extract_answer(decoded: str) -> str:
    """The VQA answer in the decoded generated tokens: text before the first
    ``<|answer_end|>`` (after the last ``<|answer_start|>`` before it, if any), stripped;
    "" when ``<|answer_end|>`` is missing (official token_utils)."""
    before, found, _ = decoded.partition(ANSWER_END)
    if not found:
        return ""
    start = before.rfind("<|answer_start|>")
    return (before[start + len("<|answer_start|>"):] if start != -1 else before).strip()
