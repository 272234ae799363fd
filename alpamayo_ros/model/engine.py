"""What the two inference engines share: their input, their request, their result.

An *engine* runs one model call on prepared tensors: vision, prefill, CoC decode and flow
matching. Two engines compute the same outputs: :class:`~alpamayo_ros.model.generation.
EagerEngine` (the reference, dynamic shapes) and :class:`~alpamayo_ros.model.fast_path.
FastEngine` (static shapes, captured steps, vision reuse). The runtime chooses one per call
and gets one result type, :class:`Prediction`, from either.

Random draws (both engines): a call re-seeds the engine's generator with the request's
seed (or a seed drawn from torch's global RNG), draws the flow-matching noise first and
only then samples the CoC, so the noise of a seed does not depend on how many decode steps
ran.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional, Protocol

import torch

from alpamayo_ros.core.errors import ModelRuntimeError
from alpamayo_ros.core.types import NUM_WAYPOINTS

# Calls lap(stage) after "vision", "prefill", "coc_decode" and "diffusion" ("vision" only
# where the engine encodes the images apart from the prefill).
Lap = Callable[[str], None]


@dataclass
class PreparedInputs:
    """Model-ready tensors of one ModelInput (all on the runtime device).

    pixel_values: (frames * patches, 1536) float32 patches of the frames in
    ``encoded_frames`` (all 16 when that is None); image_grid_thw: (16, 3) int64 of all
    frames; input_ids: (1, L) int64 prompt with fused history tokens;
    history_xyz / history_rot: float32 (16, 3) / (16, 3, 3) in the t0 frame;
    frame_keys: vision-cache keys of the 16 frames (fast path with frame keys only);
    encoded_frames: indices of the frames whose features must be computed (the others are
    in the fast path's vision cache); rope: the prompt's M-RoPE (position_ids (3, 1, L),
    rope_deltas (1, 1)) when known (computed otherwise); unguided_input_ids / route_len /
    route_start: the prompt without its navigation route span, the span's length and the
    index of its ``<|route_start|>`` in input_ids (1.5 with an instruction; None / 0 / -1
    otherwise).
    """

    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor
    input_ids: torch.Tensor
    history_xyz: torch.Tensor
    history_rot: torch.Tensor
    frame_keys: Optional[tuple] = None
    encoded_frames: Optional[tuple[int, ...]] = None
    rope: Optional[tuple[torch.Tensor, torch.Tensor]] = None
    unguided_input_ids: Optional[torch.Tensor] = None
    route_len: int = 0
    route_start: int = -1

    def encoded(self) -> tuple[int, ...]:
        """Indices of the frames whose patches are in pixel_values."""
        if self.encoded_frames is None:
            return tuple(range(self.image_grid_thw.shape[0]))
        return self.encoded_frames


@dataclass(frozen=True)
class Request:
    """What one call computes besides its inputs.

    rows: sample rows; max_new_tokens: CoC budget; diffusion_steps: Euler steps; sample /
    temperature / top_p: the CoC sampler (greedy when sample is False); seed: re-seeds the
    engine's generator (None: a seed from torch's global RNG); noise: (rows, 64, 2) float32
    start of the flow (None: drawn from the seeded generator before decoding);
    forced_tokens: (T,) ids fed instead of chosen ones (teacher forcing, for checks);
    nav_guidance_scale: classifier-free navigation guidance weight (0: none; used with
    PreparedInputs.unguided_input_ids, on both engines).
    """

    rows: int
    max_new_tokens: int
    diffusion_steps: int
    sample: bool = True
    temperature: float = 0.6
    top_p: float = 0.98
    seed: Optional[int] = None
    noise: Optional[torch.Tensor] = None
    forced_tokens: Optional[torch.Tensor] = None
    nav_guidance_scale: float = 0.0

    def __post_init__(self):
        if int(self.diffusion_steps) < 1:
            raise ModelRuntimeError(f"diffusion_steps must be >= 1, have {self.diffusion_steps}")


@dataclass
class Prediction:
    """Tensors of one model call before conversion to ModelOutput.

    actions: (N, 64, 2) float32 normalised actions; tokens: (N, T) int64 generated ids;
    found: (N,) bool, the row emitted <|traj_future_start|>; offsets: (N,) int64 expert
    offsets; rope_deltas: int; cache_len: prompt + fed tokens; path: "fast" or "eager";
    decode_steps: language-model steps the CoC decode ran.
    """

    actions: torch.Tensor
    tokens: torch.Tensor
    found: torch.Tensor
    offsets: torch.Tensor
    rope_deltas: int
    cache_len: int
    path: str
    decode_steps: int


class Engine(Protocol):
    """One model call on prepared inputs (see the module docstring)."""

    path: str

    def run(self, prepared: PreparedInputs, request: Request,
            lap: Lap = lambda stage: None) -> Prediction:
        ...

    def clear_vision_cache(self) -> None:
        ...


def seed_and_noise(generator: torch.Generator, request: Request, device: torch.device
                   ) -> torch.Tensor:
    """Re-seed ``generator`` for one call and return its flow-matching start (rows, 64, 2):
    the request's noise, or a draw made before any CoC token is sampled."""
    seed = request.seed
    if seed is None:
        seed = int(torch.randint(0, 2 ** 62, (1,)).item())
    generator.manual_seed(int(seed))
    if request.noise is not None:
        return request.noise.to(device, torch.float32)
    return torch.randn((request.rows, NUM_WAYPOINTS, 2), generator=generator, device=device,
                       dtype=torch.float32)


class NonFiniteError(ModelRuntimeError):
    """The network produced NaN or infinite logits or velocities."""


def non_finite(what: str) -> NonFiniteError:
    """The error for NaN or infinite ``what`` (e.g. "CoC logits")."""
    return NonFiniteError(f"non-finite values in the {what} (NaN or inf from the network; "
                          "the weights or the input may be damaged)")


def raise_if_not_finite(finite: torch.Tensor, what: str) -> None:
    """Raise non_finite(what) unless the (device) flag is True (one host read)."""
    if not bool(finite):
        raise non_finite(what)
