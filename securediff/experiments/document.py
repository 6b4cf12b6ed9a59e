"""The report's outputs: the results JSON, a sample grid per method, the plot
against epsilon, and the generated block of docs/RESULTS.md.

RESULTS.md keeps whatever is written outside the generated blocks: each suite
owns the text between its BEGIN/END markers and nothing else, so the
hand-written comparison survives a re-run of the report.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from securediff.experiments.cells import RUN_NAME, cell_dir
from securediff.storage import atomic_write_bytes, atomic_write_text

BEGIN = "<!-- BEGIN GENERATED: {suite} (securediff experiment report; edits here are overwritten) -->"
END = "<!-- END GENERATED: {suite} -->"


def copy_sample_grids(root: Path, results: dict[str, Any], figures: Path) -> dict[str, Path]:
    """The first seed's samples.png of each method (rows: clients, columns: classes)."""
    figures.mkdir(parents=True, exist_ok=True)
    out = {}
    for row in results["rows"]:
        src = cell_dir(root, row["name"], row["seeds"][0]) / RUN_NAME / "samples.png"
        if src.is_file():
            dst = figures / f"{results['suite']}-{row['name']}-samples.png"
            shutil.copyfile(src, dst)
            out[row["name"]] = dst
    return out


def epsilon_plot(results: dict[str, Any], path: Path) -> Path | None:
    """Minority FID and downstream accuracy (logistic regression, small CNN) against the
    claimed epsilon (mean +- std over seeds); methods without a DP claim are horizontal
    reference lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in results["rows"] if r["metrics"]["accuracy"]["mean"] is not None]
    if not rows:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    styles = ["-", "--", ":", "-."]
    # One line style per reference row and one colour per claimed row, the same in every
    # panel (the legend is drawn once).
    unclaimed = [r["name"] for r in rows if r["metrics"]["epsilon_claimed"]["mean"] is None]
    style = {name: styles[i % len(styles)] for i, name in enumerate(unclaimed)}
    claimed = [r["name"] for r in rows if r["name"] not in style]
    colour = {name: f"C{i % 10}" for i, name in enumerate(claimed)}
    for ax, key, label in ((axes[0], "fid_minority", "minority-class FID (lower is better)"),
                           (axes[1], "accuracy", "downstream accuracy, logistic regression"),
                           (axes[2], "accuracy_cnn", "downstream accuracy, small CNN")):
        for row in rows:
            m = row["metrics"].get(key)
            if m is None or m["mean"] is None:
                continue
            eps = row["metrics"]["epsilon_claimed"]["mean"]
            if eps is None:
                ax.axhline(m["mean"], color="grey", linestyle=style[row["name"]],
                           label=f"{row['name']} (no DP claim)")
            else:
                ax.errorbar([eps], [m["mean"]], yerr=[m["std"] or 0.0], fmt="o", capsize=3,
                            color=colour[row["name"]], label=row["name"])
        ax.set_xlabel("claimed epsilon of the shared artefact (delta 1e-5)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="best")
    mode = "" if results["private"] else "  [NOT PRIVATE: --quick test seeds]"
    fig.suptitle(f"suite {results['suite']}: mean +- std over seeds{mode}", fontsize=10)
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _num(m: dict[str, Any] | None, digits: int = 3) -> str:
    if not m or m.get("mean") is None:
        return "n/a"
    text = f"{m['mean']:.{digits}f}"
    return text if m.get("std") is None else f"{text} ± {m['std']:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]


def markdown_block(results: dict[str, Any], *, md_path: Path, figures: dict[str, Path],
                   plot: Path | None, commands: list[str], block: str | None = None) -> str:
    """The suite's generated block; `block` names it (default: the suite), so that
    a directory holding some of a suite's methods writes a block of its own."""
    rel = lambda p: os.path.relpath(p, md_path.parent)  # noqa: E731
    suite = results["suite"]
    block_name = block or suite
    title = f"## Suite `{suite}`: {results['description']}"
    if block_name != suite:
        title = f"## Suite `{suite}`, block `{block_name}`: {results['description']}"
    out = [BEGIN.format(suite=block_name), "", title, ""]
    if results["private"]:
        out.append("Mode: **private** (training and DP noise from the OS; no seed recorded).")
    else:
        out.append("Mode: **NOT PRIVATE** (`--quick`: insecure test seeds, a tiny config with "
                   "fewer clients; the setting names describe the full suite).")
    wall = results["wall_seconds"]
    runs = (f"{wall['invocations_total'] / 60:.1f} min over {len(wall['invocations'])} finished "
            "invocation(s) of `securediff experiment run`" if wall["invocations"]
            else "no invocation of `securediff experiment run` has finished yet")
    out += ["", f"Seeds: {results['seeds']} (repetition N uses partition seed N for every method: "
            f"paired comparisons). Cells finished: {results['cells_finished']} of "
            f"{results['cells_expected']} (registered methods x seeds). Wall time on this machine: "
            f"{wall['cells_total'] / 60:.1f} min of cells (train + evaluate + audit); {runs}.", ""]
    out += ["### Hyperparameters (fixed before the runs; securediff/experiments/suites.py says which, if any, were tuned on the data)", ""]
    hp = results["hyperparameters"]
    out += _table(["section", "values"], [[s, ", ".join(f"{k} = {v}" for k, v in sorted(vals.items()))]
                                         for s, vals in sorted(hp.items())])
    out += ["", "Per method (t0 is calibrated by the accountant to the method's epsilon; "
            "measured t0 and the forward-noise epsilon by both bounds):", ""]
    body = []
    by_name = {r["name"]: r for r in results["rows"]}
    for m in results["methods_table"]:
        r = by_name.get(m["name"], {}).get("metrics", {})
        over = "; ".join(f"{s}: " + ", ".join(f"{k} = {v}" for k, v in vals.items())
                         for s, vals in m["overrides"].items()) or "-"
        body.append([m["name"], m["strategy"], m["setting"], over, m["accounting"],
                     "-" if m["epsilon"] is None else f"{m['epsilon']:g}",
                     _num(r.get("t0"), 0), _num(r.get("forward_epsilon_exact"), 2),
                     _num(r.get("forward_epsilon_classic"), 2)])
    out += _table(["method", "strategy", "setting", "overrides", "accounting", "target eps", "t0",
                   "forward eps exact", "forward eps classic"], body)
    out += ["", "### Results (mean ± sample std over seeds; each value is first averaged over the "
            "clients)", ""]
    body = []
    for r in results["rows"]:
        m = r["metrics"]
        body.append([r["name"], f"{len(r['seeds'])}", _num(m["epsilon_claimed"], 2), r.get("relation") or "n/a",
                     _num(m.get("epsilon_replace_one"), 2), _num(m["accuracy"]), _num(m.get("accuracy_cnn")),
                     _num(m["bias_std"]), _num(m["bias_gap"]), _num(m["fid_all"], 2),
                     _num(m["fid_majority"], 2), _num(m["fid_minority"], 2), _num(m["mia_auc"]),
                     _num(m["mia_dp_auc_ceiling"]), _num(m["mia_audit_ceiling"], 2),
                     _num(m["seconds"], 0)])
    out += _table(["method", "seeds", "claimed eps", "relation", "eps replace-one", "accuracy (logreg)",
                   "accuracy (CNN)", "bias std", "bias gap", "FID all",
                   "FID majority", "FID minority", "MIA AUC (loss, shared)", "max AUC at claimed eps",
                   "audit eps ceiling", "cell seconds"], body)
    out += ["", "Claimed eps: the ledger's epsilon for the shared artefact (max over clients), "
            "n/a without a DP claim, under the neighbouring relation beside it; `eps replace-one` "
            "is the same ledger under replace-one (add/remove events analysed directly under "
            "replace-one, accountants.compose; group privacy only where no direct analysis applies), "
            "the relation on which the rows compare. MIA: the loss attack on the shared denoiser, all clients' "
            "members against their holdout; `max AUC at claimed eps` is the largest AUC any "
            "attack can reach against an (eps, 1e-5)-DP release; `audit eps ceiling` the largest "
            "epsilon lower bound this many records could certify. `local` has no shared model. Accuracy: "
            "downstream accuracy on the real test split of a logistic regression (logreg) and of a small "
            "CNN (securediff/evaluation/downstream_cnn.py, settings fixed in code), each trained on the "
            "client's synthetic samples alone; n/a where a cell was evaluated before the CNN was reported.",
            ""]
    paired = [r for r in results["rows"] if "vs_local" in r]
    if paired:
        out += ["### Against `local` (paired per seed on the same partition, then mean ± std)", ""]
        out += _table(["method", "accuracy (logreg) change (points)", "accuracy (CNN) change (points)",
                       "bias std change (%)", "bias gap change (%)", "minority FID change (%)"],
                      [[r["name"], _num(r["vs_local"]["accuracy_points"], 1),
                        _num(r["vs_local"].get("accuracy_cnn_points"), 1),
                        _num(r["vs_local"]["bias_std_percent"], 1),
                        _num(r["vs_local"]["bias_gap_percent"], 1),
                        _num(r["vs_local"]["fid_minority_percent"], 1)] for r in paired])
        out.append("")
    out += _best_non_collaborative_tables(results)
    if results["missing"]:
        out += ["### Missing rows", ""]
        out += _table(["method", "strategy", "why"],
                      [[m["method"], m["strategy"], m["reason"]] for m in results["missing"]])
        out.append("")
    out += ["### Figures", ""]
    if plot is not None:
        out += [f"![minority FID and accuracy against epsilon]({rel(plot)})", ""]
    for name, path in figures.items():
        out.append(f"- `{name}` (first seed; rows: clients, columns: classes): ![{name}]({rel(path)})")
    out += ["", "### Commands", "", "```bash", *commands, "```", "", END.format(suite=block_name)]
    return "\n".join(out) + "\n"


_CHANGE_HEADERS = (("accuracy", "accuracy_points", "accuracy (logreg) change (points)"),
                   ("accuracy_cnn", "accuracy_cnn_points", "accuracy (CNN) change (points)"),
                   ("bias_std", "bias_std_percent", "bias std change (%)"),
                   ("bias_gap", "bias_gap_percent", "bias gap change (%)"),
                   ("fid_minority", "fid_minority_percent", "minority FID change (%)"))


def _best_non_collaborative_tables(results: dict[str, Any]) -> list[str]:
    """One table per setting: each collaborative method against the best non-collaborative
    row of each metric, the header naming that row."""
    out: list[str] = []
    for setting, best in (results.get("best_non_collaborative") or {}).items():
        rows = [r for r in results["rows"] if r["setting"] == setting and "vs_best_non_collaborative" in r]
        if not rows:
            continue
        out += [f"### Against the best non-collaborative row ({setting or 'no setting'})", "",
                "Per metric, the non-collaborative row (local, public-only, local+public: by the strategy "
                "rules) with the best mean over seeds, named in the header; paired per seed on the same "
                "partition, then mean ± std.", ""]
        header = ["method"] + [f"{title} vs `{best[key]['best']}`" if best[key]["best"] else f"{title} (no row)"
                               for key, _, title in _CHANGE_HEADERS]
        out += _table(header, [[r["name"], *(_num(r["vs_best_non_collaborative"][name], 1)
                                             for _, name, _ in _CHANGE_HEADERS)] for r in rows])
        out.append("")
    return out


def write_block(md_path: Path, suite: str, block: str) -> None:
    """Replace the generated block named `suite` in `md_path` (append it if absent)."""
    begin, end = BEGIN.format(suite=suite), END.format(suite=suite)
    text = md_path.read_text() if md_path.exists() else "# Results\n\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        text = head + block + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + block
    atomic_write_text(md_path, text)
