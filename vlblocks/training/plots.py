"""Curves of a run (mIoU per epoch, per-class IoU, ...) as PNG panels, drawn with matplotlib when it is installed.

matplotlib is an optional extra (``pip install vlblocks[viz]``): without it ``plot_panels`` says once how to get
the curves and returns False, so a recipe runs the same either way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = ["plot_panels"]

_warned = False


def plot_panels(
    path: str | Path,
    panels: dict[str, dict[str, tuple[Sequence[float], Sequence[float | None]]]],
    *,
    xlabel: str,
    ylabel: str,
    ylim: tuple[float, float] | None = None,
    marker: str | None = None,
) -> bool:
    """One panel per entry of `panels` (its title) side by side, one line per ``label: (xs, ys)`` inside it (a
    ``None`` y is a gap); a panel of more than 10 lines uses the 20-colour map and puts its legend outside.

    Returns:
        True when the PNG was written, False when matplotlib is missing (said once per process).
    """
    global _warned
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        if not _warned:
            print(f"curves ({Path(path).name}, ...) need matplotlib: pip install vlblocks[viz]")
            _warned = True
        return False
    if not panels:
        raise ValueError("panels must hold at least one panel, got none")
    many = max(len(lines) for lines in panels.values()) > 10
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels) + 1, 4), squeeze=False)
    for ax, (title, lines) in zip(axes[0], panels.items()):
        for k, (label, (xs, ys)) in enumerate(lines.items()):
            ys = [float("nan") if y is None else y for y in ys]
            colour = plt.cm.tab20(k % 20) if many else None
            ax.plot(list(xs), ys, marker=marker, label=label, color=colour)
        ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
        if ylim is not None:
            ax.set_ylim(*ylim)
    if many:
        axes[0][-1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1, 0.5))
    else:
        axes[0][-1].legend()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return True
