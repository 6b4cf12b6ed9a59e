"""The sections of a run's report, each from the file that holds it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from securediff.errors import CheckpointError, DataError
from securediff.figures import figure_png, headline_text
from securediff.privacy.ledger import PrivacyLedger
from securediff.reopen import check_finished
from securediff.run_report import markdown
from securediff.run_report.epsilon import epsilon_by_round, epsilon_figure
from securediff.run_report.page import banner, document, esc, num, png_img, table
from securediff.storage import atomic_write_text, read_json

REPORT_NAME = "report.html"
# Section titles, in page order (tests look for each).
SECTIONS = ("Configuration", "Partition", "Per-client metrics", "Privacy statement",
            "Privacy ledger: epsilon over rounds", "Samples", "Audit")
# What the page shows from the run as it finished: each must match the manifest.
REPORTED = ("config.toml", "partition.json", "metrics.json", "ledger.json",
            "privacy_statement.json", "privacy_statement.md", "samples.png")


def _text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CheckpointError(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} cannot be read: {exc}") from None


def _config(run_dir: Path) -> tuple[str, Any]:
    from securediff.config import from_dict, load_toml

    return _text(run_dir / "config.toml"), from_dict(load_toml(run_dir / "config.toml"))


def _partition_section(run_dir: Path, cfg: Any) -> str:
    from securediff.data import Partition, load_dataset

    part = Partition.from_json(_text(run_dir / "partition.json"))
    try:
        data = load_dataset(cfg.data.dataset, path=cfg.data.path or None)
    except DataError as exc:  # sizes only: the labels live with the data, not the run
        rows = [(c.client_id, c.member_indices.size, c.holdout_indices.size) for c in part.clients]
        return (f"<p class=\"note\">Class counts unavailable ({esc(exc)}).</p>"
                + table(("client", "members", "holdout"), rows, numeric={1, 2}))
    summary = part.summary_rows(data.labels, data.num_classes)
    names = list(data.class_names)
    header = ("client", "members", "holdout", *names, "minority classes")
    rows = [(r["client"], r["members"], r["holdout"], *r["class_counts"],
             ", ".join(names[k] for k in r["minority_classes"]) or "none") for r in summary]
    return (f"<p>{esc(part.scheme)} partition of {esc(cfg.data.dataset)} over "
            f"{len(part.clients)} clients: members per class (trained on), holdout (never "
            "trained on; the audits' non-members). Minority: under 5% of a client's members.</p>"
            + table(header, rows, numeric=set(range(1, 3 + len(names)))))


# Downstream accuracy of both classifiers (logistic regression, small CNN); a metrics.json
# written before the CNN was reported has no accuracy_cnn, shown as n/a.
METRIC_COLUMNS = (("client_id", "client"), ("members", "members"), ("accuracy", "accuracy (logreg)"),
                  ("accuracy_cnn", "accuracy (CNN)"), ("fid_all", "FID all"), ("fid_minority", "FID minority"),
                  ("bias_gap", "bias gap"), ("epsilon_shared", "epsilon shared"),
                  ("epsilon_personal", "epsilon personal"))


def _metrics_section(metrics: dict[str, Any]) -> str:
    clients = metrics.get("clients", [])
    rows = [tuple(c.get(key) for key, _ in METRIC_COLUMNS) for c in clients]
    mean = metrics.get("summary", {}).get("mean", {})
    means = ", ".join(f"{esc(k)} {num(v)}" for k, v in sorted(mean.items()))
    return (f"<p>Mean over clients: {means or 'n/a'}.</p>"
            + table([h for _, h in METRIC_COLUMNS], rows, numeric=set(range(1, len(METRIC_COLUMNS)))))


def _statement_section(run_dir: Path) -> str:
    text = _text(run_dir / "privacy_statement.md")
    # Its own title repeats the section's.
    text = text.removeprefix("# Privacy statement\n")
    return markdown.to_html(text, demote=2)


def _ledger_section(run_dir: Path, metrics: dict[str, Any], statement: dict[str, Any]) -> str:
    raw = read_json(run_dir / "ledger.json")
    if not isinstance(raw, dict):
        raise CheckpointError(f"{run_dir / 'ledger.json'}: expected client id -> ledger")
    ledgers = {cid: PrivacyLedger.from_dict(entry) for cid, entry in raw.items()}
    rows = epsilon_by_round(ledgers, metrics.get("summary", {}).get("rounds", []))
    head = statement.get("headline") or {}
    fig = epsilon_figure(rows, title=f"shared model, delta = {head.get('delta', 'n/a')}, "
                                     f"{head.get('accountant', 'n/a')} (from ledger.json)")
    clients = sorted(ledgers)
    body = [(r["round"], r["max"], *(r["clients"][c] for c in clients)) for r in rows]
    return ("<p>Each client's epsilon for the shared model, recomputed from ledger.json by the "
            "library's ledger and accountant. The ledger merges repeated steps, so per-round "
            "steps are spread over the rounds a client trained in (metrics.json's round logs); "
            "the last row is the ledger in full: the claim of the privacy statement.</p>"
            + png_img(figure_png(fig), "epsilon over rounds")
            + table(("round", "max over clients", *clients), body,
                    numeric=set(range(1, 2 + len(clients)))))


def _samples_section(run_dir: Path) -> str:
    if (run_dir / "samples.png").is_file():
        out = ["<p>Rows are clients, columns classes; the caption states the guarantee the "
               "privacy statement gives.</p>",
               png_img((run_dir / "samples.png").read_bytes(), "samples")]
    else:
        out = ["<p>This run directory holds no samples.png.</p>"]
    if (run_dir / "sampled.png").is_file():
        out += ["<p class=\"note\">sampled.png: drawn by <code>securediff sample</code> after the "
                "run finished (not pinned by the manifest).</p>",
                png_img((run_dir / "sampled.png").read_bytes(), "sampled")]
    return "\n".join(out)


def _audit_section(run_dir: Path) -> str:
    audit = run_dir / "audit"
    if not (audit / "audit.json").is_file():
        return ("<p>No audit in this run directory: <code>securediff audit run RUN</code> "
                "attacks its models and writes one.</p>")
    result = read_json(audit / "audit.json")
    out = [f"<p><strong>Verdict: {esc(result.get('verdict', 'n/a'))}</strong>: epsilon lower "
           f"bound {num(result.get('epsilon_lower_bound'))} (ceiling {num(result.get('ceiling'))},"
           f" {num(result.get('confidence'))} confidence) against claimed "
           f"{num(result.get('epsilon_claimed'))}. <span class=\"note\">audit/ was written after "
           "the run finished; the manifest does not pin it.</span></p>"]
    if (audit / "roc.png").is_file():
        out.append(png_img((audit / "roc.png").read_bytes(), "audit ROC"))
    if (audit / "audit.md").is_file():
        out.append(markdown.to_html(_text(audit / "audit.md"), demote=2))
    return "\n".join(out)


def build_report(run_dir: Path) -> str:
    """The page's HTML. CheckpointError for an unfinished run, a manifest that does
    not verify, or a reported file that is missing or unreadable."""
    run_dir = Path(run_dir)
    check_finished(run_dir, also=REPORTED)
    config_text, cfg = _config(run_dir)
    metrics = read_json(run_dir / "metrics.json")
    statement = read_json(run_dir / "privacy_statement.json")
    manifest = read_json(run_dir / "manifest.json")
    if not isinstance(metrics, dict) or not isinstance(statement, dict):
        raise CheckpointError(f"{run_dir}: metrics.json or privacy_statement.json is malformed")
    header = (f"<p>{banner(statement)} {esc(headline_text(statement))}</p>"
              f"<p class=\"note\">strategy {esc(cfg.federation.strategy)}, protocol "
              f"{esc(cfg.federation.protocol)}, {esc(cfg.data.dataset)}, "
              f"{esc(cfg.data.num_clients)} clients, {esc(cfg.federation.rounds)} rounds; "
              f"finished {esc(manifest.get('finished', 'n/a'))}, git "
              f"{esc(manifest.get('git_revision') or 'n/a')}. Every file shown below matches "
              "the SHA-256 digest manifest.json recorded when the run finished, except where "
              "marked.</p>")
    bodies = (
        f"<pre class=\"config\">{esc(config_text)}</pre>",
        _partition_section(run_dir, cfg),
        _metrics_section(metrics),
        _statement_section(run_dir),
        _ledger_section(run_dir, metrics, statement),
        _samples_section(run_dir),
        _audit_section(run_dir),
    )
    anchors = ("config", "partition", "metrics", "privacy", "ledger", "samples", "audit")
    return document(title=f"securediff run {run_dir.name}", header=header,
                    sections=list(zip(anchors, SECTIONS, bodies, strict=True)))


def write_report(run_dir: Path) -> Path:
    """Build and write `RUN/report.html` atomically; returns its path."""
    page = build_report(run_dir)
    path = Path(run_dir) / REPORT_NAME
    atomic_write_text(path, page)
    return path
