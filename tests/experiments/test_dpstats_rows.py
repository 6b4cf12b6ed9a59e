"""The core suite's rows built on the statistics release: their configs validate
with the settings the suite fixes, the clip is what the suite says it is (the
median feature norm of the public font digits), and both run as quick cells."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli.app import app
from securediff.data import font_digits
from securediff.experiments.cells import cell_overrides
from securediff.experiments.suites import DPSTATS_RELEASE, PUBLIC_FONTS, SUITES
from securediff.privacy.stats_release import colour_normalised_grey, identity
from securediff.run import load_config

ROWS = ("dpstats-eps10", "dpstats-gaussian-eps10")
# Every row on the release: (feature map, clip, epsilon) as the suite fixes them.
ALL_ROWS = {**{f"dpstats-eps{e:g}": ("colour-normalised-grey", 10.2, e) for e in (10.0, 4.0, 1.0)},
            **{f"dpstats-gaussian-eps{e:g}": ("colour-normalised-grey", 10.2, e) for e in (10.0, 4.0, 1.0)},
            "dpstats-identity-eps10": ("identity", 11.7, 10.0),
            "dpstats-shared-eps10": ("colour-normalised-grey", 10.2, 10.0),
            "dpstats-handoff1-eps10": ("colour-normalised-grey", 10.2, 10.0)}
# The rows with the public model below the hand-off (added after results were seen).
BELOW_HANDOFF = {"dpstats-shared-eps10": "shared", "dpstats-handoff1-eps10": "shared"}
HANDOFF_T = {"dpstats-handoff1-eps10": 1}


def test_the_suite_has_every_release_row():
    assert {m.name for m in SUITES["core"].methods if m.strategy.startswith("dpstats")} == set(ALL_ROWS)


@pytest.mark.parametrize("name", sorted(ALL_ROWS))
def test_the_rows_validate_with_the_settings_the_suite_fixes(tmp_path, name):
    suite = SUITES["core"]
    method = suite.method(name)
    cfg = load_config(None, cell_overrides(suite, method, seed=0, quick=False, out_dir=tmp_path))
    s = cfg.stats
    feature_map, clip, epsilon = ALL_ROWS[name]
    assert (s.release, s.feature_map, s.clip, s.moment_rank, s.epsilon) == (True, feature_map, clip, 0, epsilon)
    assert method.epsilon == epsilon and "replace-one" in method.accounting
    # the release is calibrated and its claim stated under replace-one, the relation the rows compare on
    assert cfg.federation.strategy_rules.shared_relation(hybrid_forward=False) == "replace-one"
    assert (s.handoff_t, s.below_handoff, s.finetune_steps) == (HANDOFF_T.get(name, 500), BELOW_HANDOFF.get(name, "personal"),
                                                              1000)
    assert (cfg.federation.protocol, cfg.privacy.accountant) == ("secagg", "rdp")
    assert cfg.data.dataset == "colored-digits" and cfg.federation.strategy_rules.release_based
    assert bool(cfg.public.dataset) is (method.strategy == "dpstats")


@pytest.mark.parametrize(("feature_map", "clip"), [(colour_normalised_grey, DPSTATS_RELEASE["clip"]),
                                                   (identity, ALL_ROWS["dpstats-identity-eps10"][1])])
def test_the_fixed_clip_is_the_median_feature_norm_of_the_public_font_digits(feature_map, clip):
    images = font_digits.render_font_digits(size=8, channels=3, per_class=PUBLIC_FONTS["per_class"],
                                            generator=np.random.default_rng(0)).images
    median = float(np.median(np.linalg.norm(feature_map(images.astype(np.float64)), axis=1)))
    assert median == pytest.approx(clip, abs=0.05)


def test_both_rows_run_as_quick_cells(tmp_path):
    out = tmp_path / "suite"
    result = CliRunner().invoke(app, ["experiment", "run", "--quick", "--methods", ",".join(ROWS),
                                      "--out", str(out), "--json"])
    assert result.exit_code == 0, result.output
    assert {c["method"]: c["status"] for c in json.loads(result.stdout)["cells"]} == dict.fromkeys(ROWS, "done")
    cells = {name: json.loads((out / f"cells/{name}/seed-0/cell.json").read_text()) for name in ROWS}
    for cell in cells.values():
        assert cell["summary"]["epsilon_shared_max"] <= 10.0 + 1e-6
        ledgers = json.loads((out / cell["run_dir"] / "ledger.json").read_text())
        assert {e["relation"] for led in ledgers.values() for e in led["events"]} == {"replace_one"}
    assert 0.0 <= cells["dpstats-eps10"]["mia_shared"]["auc"] <= 1.0  # the fine-tuned shared denoiser
    assert cells["dpstats-gaussian-eps10"]["mia_shared"]["auc"] is None  # no denoiser
