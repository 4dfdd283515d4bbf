"""The one plotting setup: pyplot on the file-only Agg backend, a figure written whole.

Example:
>>> with figure("objective.png", figsize=(7, 4)) as (fig, ax):
...     ax.plot([1, 2, 3], [0.5, 0.6, 0.7])
"""

from __future__ import annotations

import contextlib

from esc50tf.io import atomic_path


def pyplot():
    """`matplotlib.pyplot` on the non-interactive Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextlib.contextmanager
def figure(path, figsize, dpi=110, tight=True, **subplots):
    """Yields `(fig, axes)` of `plt.subplots`; writes the figure to `path` after the block.

    The image is written whole or not at all (`io.atomic_path`), in the format
    of `path`'s extension, and the figure is closed even when the block raises.

    Args:
        path: str or Path. The image file.
        figsize: (width, height) in inches.
        dpi: int. Resolution of the file.
        tight: bool. `fig.tight_layout()` before writing.
        **subplots: further `plt.subplots` arguments (nrows, sharex, gridspec_kw...).
    """
    plt = pyplot()
    fig, axes = plt.subplots(figsize=figsize, **subplots)
    try:
        yield fig, axes
        if tight:
            fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format=str(path).rsplit(".", 1)[-1])
    finally:
        plt.close(fig)
