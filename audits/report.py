"""Audit reports in the run directory: `audit/audit.json`, a log-log ROC plot
(`audit/roc.png`, one panel per target) and a Markdown report (`audit/audit.md`).
Files are written atomically with the storage helpers of the core."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from audits.attacks.evaluate import AttackReport
from audits.bounds.verdict import EXPLANATIONS, VERDICT_ORDER
from securediff.storage import atomic_write_bytes, atomic_write_json, atomic_write_text

NOTES = (
    "Every bound here is a measurement: its confidence assumes independent trials, and the "
    "members and non-members of one trained model are not. A bound above the claim is worth a "
    "canary audit (`securediff audit selfcheck` audits the mechanisms with independent trials); "
    "it is not a verdict. The ceiling is the most the number of evaluated records could ever "
    "certify.",
    "Thresholds, timesteps and score directions are chosen on the reference split; AUC, ROC, "
    "TPR and bounds are reported on the evaluated split only.",
    "TPR at an FPR below 1 / (number of evaluated non-members) is not measurable and is null.",
    "No Gaussian-DP epsilon is reported: it reads the bound on a Gaussian privacy curve, and a "
    "trained model's curve is not Gaussian in general (for randomized response or a subsampled "
    "Gaussian it can exceed the true epsilon with no sampling error).",
)


def roc_figure(reports: list[AttackReport], *, title: str = ""):
    """Log-log ROC curves, one panel per target, one line per attack. Each panel
    names the epsilon claimed for its target and each attack's verdict, so the
    plot is read against the claim it tests. Built without pyplot (no global state)."""
    from matplotlib.figure import Figure

    targets = list(dict.fromkeys(r.target for r in reports))
    cols = min(3, max(1, len(targets)))
    rows = (len(targets) + cols - 1) // cols
    fig = Figure(figsize=(4.2 * cols, 3.8 * rows + (0.5 if title else 0)))
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax, name in zip(axes.ravel(), targets, strict=False):
        floor = 1.0
        panel = [r for r in reports if r.target == name]
        for r in panel:
            fpr, tpr = r.roc
            floor = min(floor, 0.5 / max(r.nonmembers, 1))
            ax.step(np.maximum(fpr, floor), np.maximum(tpr, floor), where="post",
                    label=f"{r.attack}: AUC {r.auc.value:.2f}, {r.verdict}")
        grid = np.geomspace(floor, 1.0, 50)
        ax.plot(grid, grid, color="grey", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(floor, 1.0)
        ax.set_ylim(floor, 1.0)
        ax.set_title(f"{name}\n{_claim(panel[0])}", fontsize=9)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(fontsize=7, loc="lower right")
    for ax in axes.ravel()[len(targets):]:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def _claim(report: AttackReport) -> str:
    eps = report.epsilon_claimed
    if eps is None or not np.isfinite(eps):
        return "no epsilon claimed"
    return f"claimed epsilon {eps:.3f} ({report.accountant})"


def roc_title(result: dict[str, Any]) -> str:
    """The figure's title: what was attacked and the audit's overall verdict."""
    mode = "" if result.get("private", True) else "; NOT PRIVATE: insecure test mode"
    return (f"Membership inference, log-log ROC (strategy {result.get('strategy', '?')}"
            f"{mode}). Verdict: {result.get('verdict', 'n/a')}")


def roc_png(reports: list[AttackReport], *, title: str = "") -> bytes:
    fig = roc_figure(reports, title=title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return buf.getvalue()


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Privacy audit", "", f"Run: `{result['run_dir']}` (strategy {result['strategy']}"
             + ("" if result["private"] else "; NOT PRIVATE: insecure test mode") + ")", ""]
    head = result.get("headline") or {}
    lines += [f"**Verdict: {result['verdict']}** ({EXPLANATIONS.get(result['verdict'], '')}). Headline: {head.get('attack', 'n/a')} on "
              f"{head.get('target', 'n/a')}: epsilon lower bound {_fmt(result['epsilon_lower_bound'])} "
              f"(ceiling {_fmt(result['ceiling'])}, {_fmt(result['confidence'])} confidence, "
              f"{result['method']}) against claimed {_fmt(result['epsilon_claimed'])} "
              f"({result['accountant'] or 'no accountant'}).", ""]
    for t in result["targets"]:
        lines += [f"## {t['target']}", "",
                  f"{t['members']} members, {t['nonmembers']} non-members; claimed epsilon "
                  f"{_fmt(t['epsilon_claimed'])} ({t['accountant'] or 'no claim'}).", "",
                  "| attack | AUC [CI] | TPR@1% | TPR@0.1% | eps lower bound | ceiling | above claim "
                  "| verdict |", "|---|---|---|---|---|---|---|---|"]
        for a in t["attacks"]:
            lo, hi = a["auc_ci"]
            tpr = a["tpr_at_fpr"]
            lines.append(f"| {a['attack']} | {_fmt(a['auc'])} [{_fmt(lo)}, {_fmt(hi)}] | "
                         f"{_fmt(tpr.get('0.01'))} | {_fmt(tpr.get('0.001'))} | "
                         f"{_fmt(a['epsilon_lower_bound'])} | {_fmt(a['ceiling'])} | "
                         f"{_fmt(a.get('bound_above_claim'))} | {a['verdict']} |")
        reasons = {r for a in t["attacks"] for r in a["tpr_at_fpr_reason"].values()}
        lines += [""] + [f"- {r}" for r in sorted(reasons)] + ([""] if reasons else [])
    mem = result.get("memorization")
    if mem:
        lines += ["## Memorization of released samples", "",
                  "| client | samples | closer to a member | p-value | near copies (members / holdout) "
                  "| filtered | extracted |", "|---|---|---|---|---|---|---|"]
        for cid, m in mem.items():
            lines.append(f"| {cid} | {m['samples']} | {_fmt(m['closer_to_member_fraction'])} | "
                         f"{_fmt(m['p_value'])} | {m['near_copies_of_members']} / "
                         f"{m['near_copies_of_holdout']} | {m['filtered_candidates']} | "
                         f"{m['extracted']} |")
        lines.append("")
    lines += ["## Verdicts", ""] + [f"- {name}: {EXPLANATIONS[name]}." for name in VERDICT_ORDER]
    lines += ["", "## Notes", ""] + [f"- {n}" for n in NOTES]
    return "\n".join(lines) + "\n"


def write_report(run_dir: Path, result: dict[str, Any], reports: list[AttackReport]
                 ) -> dict[str, Path]:
    out = Path(run_dir) / "audit"
    paths = {"json": out / "audit.json", "markdown": out / "audit.md", "roc": out / "roc.png"}
    atomic_write_json(paths["json"], result)
    atomic_write_text(paths["markdown"], markdown(result))
    if reports:
        atomic_write_bytes(paths["roc"], roc_png(reports, title=roc_title(result)))
    else:
        del paths["roc"]
    return paths
