"""Small torch models for tests: named like transformer layers, no transformers needed."""

from __future__ import annotations

import torch
from torch import nn


class ToyBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.query = nn.Linear(width, width)
        self.value = nn.Linear(width, width)
        self.up = nn.Linear(width, 2 * width)
        self.down = nn.Linear(2 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x + torch.tanh(self.query(x)) * self.value(x)  # (B, W)
        return h + self.down(torch.relu(self.up(h)))  # (B, W)


class ToyModel(nn.Module):
    """``blocks.{i}.{query,value,up,down}`` linear layers and a ``classifier`` head."""

    targets = ["query", "value", "up", "down"]

    def __init__(self, width: int = 8, depth: int = 2, classes: int = 3, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.blocks = nn.ModuleList(ToyBlock(width) for _ in range(depth))
        self.classifier = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.classifier(x)  # (B, classes)


def toy_batch(batch: int = 16, width: int = 8, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, width, generator=gen)
    y = torch.randint(0, classes, (batch,), generator=gen)
    return x, y
