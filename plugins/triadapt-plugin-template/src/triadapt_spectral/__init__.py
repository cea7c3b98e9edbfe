"""Example plugin: ``spectral`` scorer, S_m = ‖B D A‖₂ / r (largest singular value of ΔW over r)."""

from dataclasses import dataclass

import torch

from triadapt import ScorerSpec, hookimpl
from triadapt.scorers import Scorer


@dataclass(frozen=True)
class SpectralOptions:
    """``strategy_options: {spectral: {by_rank: false}}``: the scorer's options, with their types and defaults."""

    by_rank: bool = True  # divide by the rank r (as the paper's fnorm does); False: the largest singular value alone


class SpectralScorer(Scorer):
    name = "spectral"

    def __init__(self, by_rank: bool = True):
        self.by_rank = by_rank

    @torch.no_grad()
    def scores(self, layers):
        out = {}
        for name, layer in layers.items():
            f = layer.factors()
            _, r_up = torch.linalg.qr(f.up)  # B = Q R_B: (d, r) -> (r, r)
            _, r_down = torch.linalg.qr(f.down.T)  # Aᵀ = Q R_A: (n, r) -> (r, r)
            core = f.core if f.core is not None else torch.eye(layer.rank)
            small = r_up @ core @ r_down.T  # same singular values as B D A: (r, r)
            largest = float(torch.linalg.matrix_norm(small, ord=2))
            out[name] = largest / layer.rank if self.by_rank else largest
        return out


@hookimpl
def triadapt_scorers():
    return [ScorerSpec("spectral", lambda config, options: SpectralScorer(options.by_rank),
                       "largest singular value of ΔW, over r", SpectralOptions)]
