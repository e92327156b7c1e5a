"""The report plots' matplotlib setup and PNG encoding, shared by the report, -P section and sweep.

Plots are drawn on drivers and Ray workers without a display, so pyplot always runs on Agg, and
every figure is closed once encoded (a long sweep or many comparisons would otherwise keep them).
"""
from __future__ import annotations

import io


def pyplot():
    """matplotlib.pyplot on the non-interactive Agg backend (imported on first use: matplotlib is slow to load)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure_png(figure, dpi: int = 120) -> bytes:
    """The figure as PNG bytes (tight bounding box), then closed."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    pyplot().close(figure)
    return buffer.getvalue()
