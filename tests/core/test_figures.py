"""Labelled sample grids and the audit's ROC plot: their geometry, the text they
draw (labels, caption, privacy label) and that the PNG decodes."""

from __future__ import annotations

import io
from types import SimpleNamespace

import numpy as np
from PIL import Image

from audits.report import roc_figure, roc_png, roc_title
from securediff.figures import (
    client_samples_figure,
    figure_png,
    figure_texts,
    privacy_label,
    run_samples_figure,
)
from securediff.statement import privacy_statement

CLASSES = [str(k) for k in range(10)]


def _statement(*, private: bool, shared: float = 9.969) -> dict:
    return privacy_statement(
        strategy="pfdm", protocol_secure=True, protocol_name="secagg", private=private,
        delta=1e-5, t0=675, clip_norm=10.0, forward_exact=9.969, forward_classic=11.2,
        shared_epsilon=shared, personal_epsilon=float("inf"), accountant="pld",
        labels="public", label_epsilon=1.0)


def _decode(png: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(png))
    image.load()
    return image


def test_client_samples_are_a_labelled_grid_not_a_strip() -> None:
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (10 * 8, 1, 8, 8)).astype(np.float32)
    fig = client_samples_figure({"client-03": x}, per_class=8, class_names=CLASSES,
                                statement=_statement(private=True))
    texts = figure_texts(fig)
    assert set(CLASSES) <= set(texts)  # one row label per class
    assert {str(i) for i in range(1, 9)} <= set(texts)  # one column per sample
    joined = "\n".join(texts)
    assert "client-03" in joined and "epsilon = 9.969" in joined
    assert "PRIVATE" in texts and "NOT PRIVATE" not in joined
    image = _decode(figure_png(fig))
    width, height = image.size
    # 10 rows x 8 columns: roughly square, never the old 2641 x 34 strip.
    assert 0.5 < height / width < 2.5, image.size
    assert width >= 8 * 48 and height >= 10 * 48  # tiles drawn large enough to read


def test_run_samples_rows_are_clients_and_columns_classes() -> None:
    rng = np.random.default_rng(1)
    grids = {f"client-{i:02d}": rng.uniform(-1, 1, (10, 3, 8, 8)) for i in range(3)}
    fig = run_samples_figure(grids, class_names=CLASSES, statement=_statement(private=False))
    texts = figure_texts(fig)
    assert {"client-00", "client-01", "client-02"} <= set(texts) and set(CLASSES) <= set(texts)
    joined = "\n".join(texts)
    assert "NOT PRIVATE (insecure test mode" in joined and "epsilon = 9.969" in joined
    width, height = _decode(figure_png(fig)).size
    assert 0.2 < height / width < 2.0


def test_pixels_stay_crisp() -> None:
    """Nearest interpolation: a two-colour image keeps two colours inside its tile."""
    x = np.where(np.indices((8, 8)).sum(0) % 2 == 0, -1.0, 1.0)[None, None].repeat(10, 0)
    fig = run_samples_figure({"client-00": x}, class_names=CLASSES,
                             statement=_statement(private=True))
    image = np.asarray(_decode(figure_png(fig)).convert("L"))
    ax = fig.axes[0].get_window_extent()
    top = image.shape[0] - int(ax.y1)
    tile = image[top + 4: top + 30, int(ax.x0) + 4: int(ax.x0) + 30]
    assert set(np.unique(tile)) <= {0, 255}


def test_privacy_label_reuses_the_statement() -> None:
    assert privacy_label(_statement(private=True)) == "PRIVATE"
    assert privacy_label(_statement(private=False)).startswith("NOT PRIVATE")
    # A private run whose statement claims no epsilon for the shared model is not labelled private.
    assert privacy_label(_statement(private=True, shared=float("inf"))).startswith("NOT PRIVATE")


def _report(target: str, attack: str, verdict: str, eps: float | None) -> SimpleNamespace:
    fpr = np.linspace(0, 1, 20)
    return SimpleNamespace(target=target, attack=attack, verdict=verdict, epsilon_claimed=eps,
                           accountant=None if eps is None else "exact", nonmembers=45,
                           roc=(fpr, np.sqrt(fpr)), auc=SimpleNamespace(value=0.61))


def test_roc_names_the_claim_and_each_verdict() -> None:
    reports = [_report("shared", "loss", "uninformative", 9.969),
               _report("shared", "lira-offline", "consistent", 9.969),
               _report("personal:client-00", "loss", "no-claim", None)]
    result = {"strategy": "pfdm", "private": False, "verdict": "uninformative"}
    fig = roc_figure(reports, title=roc_title(result))
    joined = "\n".join(figure_texts(fig))
    assert "Verdict: uninformative" in joined and "NOT PRIVATE" in joined
    assert "claimed epsilon 9.969 (exact)" in joined and "no epsilon claimed" in joined
    for label in ("loss: AUC 0.61, uninformative", "lira-offline: AUC 0.61, consistent",
                  "loss: AUC 0.61, no-claim"):
        assert label in joined
    assert _decode(roc_png(reports, title="t")).format == "PNG"


def test_long_class_names_stay_inside_the_figure() -> None:
    names = ["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
             "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma"]
    grids = {f"client-{i:02d}": np.zeros((9, 3, 28, 28)) for i in range(4)}
    fig = run_samples_figure(grids, class_names=names, statement=_statement(private=True))
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    renderer = FigureCanvasAgg(fig).get_renderer()
    width, height = fig.bbox.width, fig.bbox.height
    for label in fig.axes[0].get_xticklabels() + fig.axes[0].get_yticklabels() + fig.texts:
        box = label.get_window_extent(renderer)
        assert box.x0 >= 0 and box.y0 >= 0, label.get_text()
        assert box.x1 <= width and box.y1 <= height, label.get_text()
