"""The final rank heatmap (layers × module kinds, like the paper's Figure 2)."""

from __future__ import annotations

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

LAYER = re.compile(r"^(.*?)\.(\d+)\.(.+)$")


def rank_grid(ranks: dict[str, int]) -> tuple[list[int], list[str], list[list[int | None]]]:
    """(layer indices, module kinds, ranks[layer][kind]) from module names like ``encoder.layer.3.attention.self.query``."""
    cells: dict[tuple[int, str], int] = {}
    for name, rank in ranks.items():
        match = LAYER.match(name)
        layer, kind = (int(match.group(2)), match.group(3)) if match else (0, name)
        cells[(layer, kind)] = rank
    layers = sorted({layer for layer, _ in cells})
    kinds = list(dict.fromkeys(kind for _, kind in cells))
    return layers, kinds, [[cells.get((layer, kind)) for kind in kinds] for layer in layers]


def rank_heatmap(ranks: dict[str, int], path: str | Path, title: str = "final ranks") -> Path:
    return rank_heatmaps({title: ranks}, path)


def rank_heatmaps(panels: dict[str, dict[str, int]], path: str | Path, title: str | None = None) -> Path:
    """One heatmap per panel (title -> final ranks), side by side on one colour scale (the paper's Figure 2)."""
    grids = [rank_grid(ranks) for ranks in panels.values()]
    width = max(len(kinds) for _, kinds, _ in grids)
    height = max(len(layers) for layers, _, _ in grids)
    fig, axes = plt.subplots(1, len(panels), figsize=((1.1 * width + 2) * len(panels), 0.45 * height + 1.9),
                             squeeze=False)
    high = max(max(ranks.values()) for ranks in panels.values())
    for ax, (name, (layers, kinds, grid)) in zip(axes[0], zip(panels, grids)):
        image = _draw(ax, layers, kinds, grid, high)
        ax.set_title(name)
    colorbar = fig.colorbar(image, ax=list(axes[0]), label="rank")
    colorbar.locator = MaxNLocator(integer=True)
    colorbar.update_ticks()
    if title:
        fig.suptitle(title)
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def _draw(ax, layers: list[int], kinds: list[str], grid: list[list[int | None]], high: int):
    values = [[float("nan") if v is None else v for v in row] for row in grid]
    image = ax.imshow(values, cmap="viridis", aspect="auto", vmin=0, vmax=high)
    ax.set_xticks(range(len(kinds)), [k.replace("attention.", "attn.") for k in kinds], rotation=35, ha="right")
    ax.set_yticks(range(len(layers)), [f"layer {i}" for i in layers])
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            if value is not None:
                ax.text(j, i, str(value), ha="center", va="center", color="white", fontsize=8)
    return image
