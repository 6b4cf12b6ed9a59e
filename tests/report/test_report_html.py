"""`securediff report RUN`: one self-contained HTML page, parsed back with html.parser."""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from types import SimpleNamespace

import numpy as np
from PIL import Image
from typer.testing import CliRunner

from audits.report import write_report as write_audit
from cli.app import app
from securediff.config import from_dict, load_toml
from securediff.storage import read_json

runner = CliRunner()
HEADINGS = ["Configuration", "Partition", "Per-client metrics", "Privacy statement",
            "Privacy ledger: epsilon over rounds", "Samples", "Audit"]


class Page(HTMLParser):
    """Headings, image sources, every attribute value and the visible text."""

    def __init__(self) -> None:
        super().__init__()
        self.h2: list[str] = []
        self.images: list[str] = []
        self.attrs: list[str] = []
        self.text: list[str] = []
        self._in_h2 = False

    def handle_starttag(self, tag, attrs):
        self.attrs += [v for _, v in attrs if v]
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag):
        self._in_h2 = False if tag == "h2" else self._in_h2

    def handle_data(self, data):
        self.text.append(data)
        if self._in_h2:
            self.h2.append(data.strip())


def _fake_audit(run_dir) -> None:
    """An audit/ as `securediff audit run` writes it (a real audit takes ~15 s)."""
    fpr = np.linspace(0, 1, 20)
    reports = [SimpleNamespace(target="shared", attack="loss", verdict="uninformative",
                               epsilon_claimed=9.97, accountant="exact", nonmembers=40,
                               roc=(fpr, fpr), auc=SimpleNamespace(value=0.5))]
    result = {"run_dir": str(run_dir), "strategy": "pfdm", "private": False,
              "verdict": "uninformative", "headline": None, "epsilon_lower_bound": 0.0,
              "ceiling": 3.7, "confidence": 0.95, "method": "held-out threshold",
              "epsilon_claimed": 9.97, "accountant": "exact", "targets": [], "memorization": None}
    write_audit(run_dir, result, reports)


def test_report_is_one_offline_page_with_every_section(run_copy) -> None:
    _fake_audit(run_copy)
    result = runner.invoke(app, ["report", str(run_copy), "--json"])
    assert result.exit_code == 0, result.output
    path = run_copy / "report.html"
    assert json.loads(result.stdout) == {"report": str(path)}
    html = path.read_text(encoding="utf-8")
    page = Page()
    page.feed(html)
    assert page.h2 == HEADINGS
    text = " ".join(page.text)
    statement = read_json(run_copy / "privacy_statement.json")
    assert f"{statement['headline']['epsilon']:.3f}" in text
    assert "NOT PRIVATE" in text  # an insecure test-mode run
    for client in read_json(run_copy / "metrics.json")["clients"]:
        assert client["client_id"] in text
    cfg = from_dict(load_toml(run_copy / "config.toml"))
    assert f"rounds = {cfg.federation.rounds}" in text
    # samples.png, the epsilon plot and the ROC: all inline PNGs that decode.
    assert len(page.images) == 3
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        image = Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
        image.load()
        assert image.format == "PNG" and min(image.size) > 100
    # Nothing fetched from anywhere: no URL in the page, no remote reference in any attribute.
    assert "http://" not in html and "https://" not in html and "//" not in "".join(
        a for a in page.attrs if not a.startswith("data:"))
    assert "<script" not in html.lower()


def test_run_strings_are_escaped(run_copy) -> None:
    """A client id is the run's string: markup in it is shown, never interpreted."""
    metrics = read_json(run_copy / "metrics.json")
    metrics["clients"][0]["client_id"] = "<script>alert(1)</script>"
    from securediff.run_report import build

    html = build._metrics_section(metrics)
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_both_downstream_classifiers_and_an_older_metrics_file(run_copy) -> None:
    """Each client's accuracy under both classifiers; a metrics.json written before the
    CNN was reported shows its column as n/a, never as zero."""
    from securediff.run_report import build

    metrics = read_json(run_copy / "metrics.json")
    page = Page()
    page.feed(build._metrics_section(metrics))
    assert "accuracy (logreg)" in page.text and "accuracy (CNN)" in page.text
    for client in metrics["clients"]:
        assert 0.0 <= client["accuracy_cnn"] <= 1.0
    for client in metrics["clients"]:
        del client["accuracy_cnn"]
    del metrics["summary"]["mean"]["accuracy_cnn"]
    old = Page()
    old.feed(build._metrics_section(metrics))
    cnn = list(build.METRIC_COLUMNS).index(("accuracy_cnn", "accuracy (CNN)"))
    header = old.text.index("client")
    cells = old.text[header + len(build.METRIC_COLUMNS):]
    rows = [cells[i:i + len(build.METRIC_COLUMNS)] for i in range(0, len(cells), len(build.METRIC_COLUMNS))]
    assert len(rows) == len(metrics["clients"]) and all(r[cnn] == "n/a" for r in rows)


def test_unfinished_or_edited_runs_are_refused(run_copy, tmp_path) -> None:
    unfinished = run_copy.rename(tmp_path / "tiny.incomplete")
    result = runner.invoke(app, ["report", str(unfinished)])
    assert result.exit_code == 3 and "unfinished" in result.output
    assert not (unfinished / "report.html").exists()
    run = unfinished.rename(tmp_path / "tiny")
    metrics = run / "metrics.json"
    metrics.write_text(metrics.read_text().replace("client-00", "client-99"))
    result = runner.invoke(app, ["report", str(run)])
    assert result.exit_code == 3 and "metrics.json" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (run / "report.html").exists()
