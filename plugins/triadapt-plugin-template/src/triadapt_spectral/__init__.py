"""Example plugin: ``spectral`` scorer, S_m = ‖B D A‖₂ / r (largest singular value of ΔW over r)."""

import torch

from triadapt import ScorerSpec, hookimpl
from triadapt.scorers import Scorer


class SpectralScorer(Scorer):
    name = "spectral"

    @torch.no_grad()
    def scores(self, layers):
        out = {}
        for name, layer in layers.items():
            f = layer.factors()
            _, r_up = torch.linalg.qr(f.up)  # B = Q R_B: (d, r) -> (r, r)
            _, r_down = torch.linalg.qr(f.down.T)  # Aᵀ = Q R_A: (n, r) -> (r, r)
            core = f.core if f.core is not None else torch.eye(layer.rank)
            small = r_up @ core @ r_down.T  # same singular values as B D A: (r, r)
            out[name] = float(torch.linalg.matrix_norm(small, ord=2)) / layer.rank
        return out


@hookimpl
def triadapt_scorers():
    return [ScorerSpec("spectral", lambda config: SpectralScorer(), "largest singular value of ΔW, over r")]
