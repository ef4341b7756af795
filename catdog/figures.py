"""Matplotlib figures embedded in the HTML artifacts (training curves, reliability diagram).

    png_base64(fig) -> str     the figure laid out, as base64 PNG text (90 dpi); the figure is closed
"""

from __future__ import annotations

import base64
import io


def png_base64(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode()
