"""CoC token choice without host synchronisation (the fast path's sampler).

The distribution is the official one: the ``<iN>`` trajectory ids are set to -inf, then
transformers' TemperatureLogitsWarper and TopPLogitsWarper (the official order and
semantics), then softmax. Only the final draw differs from ``torch.multinomial``, which
synchronises with the host on CUDA: the *exponential race* draws E_i ~ Exp(1) independently
and returns argmax_i p_i / E_i. E_i / p_i is exponential with rate p_i, and the smallest of
independent exponentials is the one of index i with probability p_i / sum_j p_j, so the
draw has exactly the categorical distribution p (``test/test_fast_path.py`` checks it
against the reference distribution). Greedy decoding is argmax after the ban.
"""
from __future__ import annotations

from typing import Optional

import torch


def exponential_race(probs: torch.Tensor, generator: Optional[torch.Generator] = None
                     ) -> torch.Tensor:
    """One index per row of ``probs`` (R, V), drawn with probability probs[r, i] / sum."""
    noise = torch.empty_like(probs).exponential_(1.0, generator=generator)
    # A zero draw would turn p = 0 into 0/0 = NaN, which argmax would pick; the clamp
    # changes the distribution by far less than float rounding does.
    return (probs / noise.clamp_min(torch.finfo(noise.dtype).tiny)).argmax(dim=-1)


class TokenChooser:
    """Bans [banned_start, banned_stop), then greedy or temperature + top-p sampling.

    Call with float32 logits (R, V) (modified in place) and an optional generator; returns
    (R,) int64 token ids. Every operation stays on the logits' device.
    """

    def __init__(self, banned_start: int, banned_stop: int, sample: bool,
                 temperature: float = 0.6, top_p: float = 0.98) -> None:
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        self.banned_start, self.banned_stop = int(banned_start), int(banned_stop)
        self.sample = bool(sample)
        self.temperature, self.top_p = float(temperature), float(top_p)
        self.warpers = ([TemperatureLogitsWarper(self.temperature),
                         TopPLogitsWarper(self.top_p)] if self.sample else [])

    @property
    def key(self) -> tuple:
        """What distinguishes two choosers (their captured steps cannot be shared)."""
        return (self.banned_start, self.banned_stop, self.sample, self.temperature, self.top_p)

    def filtered_scores(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits after the ban and the warpers (-inf where a token cannot be chosen)."""
        logits[:, self.banned_start:self.banned_stop] = float("-inf")
        scores = logits
        for warper in self.warpers:
            scores = warper(None, scores)
        return scores

    def __call__(self, logits: torch.Tensor, generator: Optional[torch.Generator] = None
                 ) -> torch.Tensor:
        scores = self.filtered_scores(logits)
        if not self.sample:
            return scores.argmax(dim=-1)
        return exponential_race(torch.softmax(scores, dim=-1), generator)
