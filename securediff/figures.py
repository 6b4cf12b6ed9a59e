"""Figures a person reads: labelled image grids with the run's privacy caption.

A sample grid without labels and without the guarantee it was released under
invites misreading (whose samples? private or a test run?). Every grid here
names its rows and columns and carries a caption taken from the run's privacy
statement (`securediff.statement`), never recomputed: the epsilon it claims for
the shared model, what it says of samples, and PRIVATE or NOT PRIVATE.

Figures are built as `matplotlib.figure.Figure` objects (no pyplot: no global
state), so tests can read back the text they draw (`figure_texts`).
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from securediff.statement import NOT_PRIVATE
from securediff.storage import atomic_write_bytes

DPI = 100
TILE_PX = 48  # each image is drawn at least this many screen pixels high
SAMPLES_ARTEFACT = "synthetic samples of a client"


def privacy_label(statement: dict[str, Any]) -> str:
    """PRIVATE only where the statement is private and claims an epsilon for the shared model."""
    if not statement.get("private", False):
        return "NOT PRIVATE (insecure test mode: seeded noise)"
    if (statement.get("headline") or {}).get("epsilon") is None:
        return "NOT PRIVATE (no DP guarantee for the shared model)"
    return "PRIVATE"


def headline_text(statement: dict[str, Any]) -> str:
    head = statement.get("headline") or {}
    eps = head.get("epsilon")
    artefact = head.get("artefact", "shared denoiser")
    if eps is None:
        return f"{artefact}: no epsilon claimed"
    return (f"{artefact}: epsilon = {eps:.3f} at delta = {head.get('delta', float('nan')):g} "
            f"({head.get('accountant', '?')}; per {head.get('per', 'record')})")


def privacy_caption(statement: dict[str, Any]) -> list[str]:
    """Caption lines of a sample figure, from the stored statement."""
    lines = [f"{privacy_label(statement)}. {headline_text(statement)}."]
    for row in statement.get("rows", []):
        if row.get("artefact") == SAMPLES_ARTEFACT:
            # The label above already says NOT PRIVATE; the row repeats it as a prefix.
            lines.append("samples: " + row["guarantee"].removeprefix(f"{NOT_PRIVATE}. "))
    return lines


def _tile(img: np.ndarray, scale: int) -> np.ndarray:
    """One (C, H, W) image in [-1, 1] as RGB uint8, each pixel a scale x scale block."""
    pix = ((np.clip(img, -1, 1) + 1) * 127.5).round().astype(np.uint8)
    pix = np.repeat(pix, 3, axis=0) if pix.shape[0] == 1 else pix[:3]
    return pix.transpose(1, 2, 0).repeat(scale, 0).repeat(scale, 1)


def _canvas(rows: Sequence[np.ndarray], scale: int, pad: int) -> np.ndarray:
    n_rows, n_cols = len(rows), max(len(r) for r in rows)
    h, w = rows[0].shape[2:]
    cell_h, cell_w = h * scale + pad, w * scale + pad
    # Grey gutters: tiles stay apart whether an image's background is black or white.
    canvas = np.full((n_rows * cell_h + pad, n_cols * cell_w + pad, 3), 150, dtype=np.uint8)
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y0, x0 = pad + i * cell_h, pad + j * cell_w
            canvas[y0:y0 + h * scale, x0:x0 + w * scale] = _tile(img, scale)
    return canvas


def _short(label: str, limit: int = 18) -> str:
    return label if len(label) <= limit else label[:limit - 1] + "~"


def image_grid_figure(rows: Sequence[np.ndarray], *, row_labels: Sequence[str],
                      col_labels: Sequence[str], title: str, caption: Sequence[str],
                      row_title: str = "", col_title: str = "", banner: str = ""):
    """Images (each row an array (N, C, H, W) in [-1, 1]) on a labelled grid.

    The canvas is drawn one image pixel to `scale` screen pixels with nearest
    interpolation, so small images stay crisp; margins are sized in pixels for
    the labels and the wrapped caption."""
    from matplotlib.figure import Figure

    if not rows or len(row_labels) != len(rows):
        raise ValueError("one label per row, and at least one row")
    h = rows[0].shape[2]
    scale = max(1, -(-TILE_PX // h))
    pad = max(2, scale // 2)
    canvas = _canvas(rows, scale, pad)
    grid_h, grid_w = canvas.shape[:2]
    rows_txt = [_short(str(r)) for r in row_labels]
    cols_txt = [_short(str(c)) for c in col_labels]
    tile_chars = (h * scale) // 7
    rotate = any(len(c) > tile_chars for c in cols_txt)
    left = 24 + 7 * max(len(r) for r in rows_txt) + (18 if row_title else 0)
    # A label rotated by 45 degrees reaches about 0.72 x its length up and to the right.
    slant = int(0.72 * 7 * max((len(c) for c in cols_txt), default=1)) if rotate else 0
    right = max(16, slant - (grid_w // max(len(cols_txt), 1)) // 2 + 24)
    width_px = max(grid_w + left + right, 560)
    wrap = max(40, int(width_px / 6.2))
    caption_lines = [ln for line in caption for ln in textwrap.wrap(line, wrap)]
    col_px = (slant + 14 if rotate else 14) + 10
    top = 34 + col_px + (16 if col_title else 0) + (18 if banner else 0)
    bottom = 18 + 14 * len(caption_lines)
    height_px = grid_h + top + bottom
    fig = Figure(figsize=(width_px / DPI, height_px / DPI), dpi=DPI)
    x0 = left + (width_px - left - right - grid_w) / 2  # centred when the caption is wider
    ax = fig.add_axes((x0 / width_px, bottom / height_px, grid_w / width_px, grid_h / height_px))
    ax.imshow(canvas, interpolation="nearest", aspect="equal")
    cell_h = (grid_h - pad) / len(rows)
    cell_w = (grid_w - pad) / max(len(r) for r in rows)
    ax.set_yticks([pad / 2 + cell_h * (i + 0.5) for i in range(len(rows))], rows_txt, fontsize=9)
    ax.set_xticks([pad / 2 + cell_w * (j + 0.5) for j in range(len(cols_txt))], cols_txt,
                  fontsize=9, rotation=45 if rotate else 0, ha="left" if rotate else "center")
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if row_title:
        ax.set_ylabel(row_title, fontsize=9)
    if col_title:
        ax.xaxis.set_label_position("top")
        ax.set_xlabel(col_title, fontsize=9)
    fig.text(0.5, 1 - 8 / height_px, title, ha="center", va="top", fontsize=11, weight="bold")
    if banner:  # PRIVATE / NOT PRIVATE, where nobody can miss it
        fig.text(0.5, 1 - 30 / height_px, banner, ha="center", va="top", fontsize=10,
                 weight="bold", color="#1a7f37" if banner == "PRIVATE" else "#c62828")
    fig.text(8 / width_px, (bottom - 10) / height_px, "\n".join(caption_lines), ha="left",
             va="top", fontsize=8, linespacing=1.35)
    return fig


def figure_texts(fig) -> list[str]:
    """Every string drawn on a figure: titles, axis and tick labels, free text."""
    texts = [t.get_text() for t in fig.texts]
    for ax in fig.axes:
        texts += [ax.get_title(), ax.get_xlabel(), ax.get_ylabel()]
        texts += [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels()]
        texts += [t.get_text() for t in ax.texts]
        legend = ax.get_legend()
        if legend is not None:
            texts += [t.get_text() for t in legend.get_texts()]
    return [t for t in texts if t]


def figure_png(fig, *, dpi: int = DPI) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def run_samples_figure(grids: dict[str, np.ndarray], *, class_names: Sequence[str],
                       statement: dict[str, Any]):
    """A run's `samples.png`: rows = clients, columns = classes (one sample each)."""
    return image_grid_figure(
        list(grids.values()), row_labels=list(grids), col_labels=list(class_names)[
            :max(len(g) for g in grids.values())],
        title="One sample per class from each client's pipeline",
        caption=privacy_caption(statement), row_title="client", col_title="class",
        banner=privacy_label(statement))


def client_samples_figure(samples: dict[str, np.ndarray], *, per_class: int,
                          class_names: Sequence[str], statement: dict[str, Any]):
    """`securediff sample`: rows = classes (per client when several), columns =
    the `per_class` samples of that class. `samples` maps client id to its draws,
    class-major as `sample_client` returns them."""
    rows, labels = [], []
    for client_id, x in samples.items():
        for k, name in enumerate(class_names):
            rows.append(x[k * per_class:(k + 1) * per_class])
            labels.append(name if len(samples) == 1 else f"{client_id} / {name}")
    who = ", ".join(samples) if len(samples) <= 3 else f"{len(samples)} clients"
    return image_grid_figure(
        rows, row_labels=labels, col_labels=[str(i + 1) for i in range(per_class)],
        title=f"Samples of {who}: {per_class} per class",
        caption=[f"client: {who}", *privacy_caption(statement)],
        row_title="class" if len(samples) == 1 else "client / class", col_title="sample",
        banner=privacy_label(statement))


def write_figure(path: Path, fig) -> None:
    """PNG, written atomically."""
    atomic_write_bytes(Path(path), figure_png(fig))
