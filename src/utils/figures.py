"""The one way this project saves a matplotlib figure: laid out, written at 100 dpi, closed."""

from __future__ import annotations

from pathlib import Path


def save_figure(fig, path: str | Path, dpi: int = 100) -> Path:
    """``fig.tight_layout()``, write ``path`` (its folder made), close ``fig`` (pyplot keeps open
    figures alive); returns ``path``."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
