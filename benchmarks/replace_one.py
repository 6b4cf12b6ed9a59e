"""Replace-one epsilons of the core suite's DP cells, from their parameters alone.

The suite's ledgers are not kept in the repository, but every event in them is
fixed by the cell's config and partition (the calibration is deterministic):
this rebuilds each client's shared events as the runner charges them (every
client contributed to every hybrid step: the noise of 10 shares reached each
sum) and prints, max over clients, the claim under its own relation, the
replace-one epsilon by group privacy (the old route) and by the direct analysis
(accountants.compose), with the method and the seconds each took. The
rebuilt claims match docs/results/core.json (8.632, 8.988, 10.000).

hybrid-forward-eps10 is shown twice: the ledger of the cells that ran (noise
calibrated with group privacy, as then) and the plan the direct calibration
makes now for the same config (less noise for the same target).

    .venv/bin/python benchmarks/replace_one.py [--seeds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from unittest import mock

from securediff.experiments.cells import cell_overrides
from securediff.experiments.suites import get_suite
from securediff.federation import distributed
from securediff.federation.client_runtime import dpsgd_params
from securediff.federation.setup import set_up_run
from securediff.models.unet import UNet
from securediff.privacy import accountants
from securediff.privacy.forward import forward_sigma
from securediff.privacy.ledger import DPSGDEvent, ForwardNoiseEvent
from securediff.run import load_config

METHODS = ("layer-split-dpsgd-eps10", "hybrid-eps10", "hybrid-forward-eps10")
SURVIVORS = 10  # every one of the core suite's 10 clients contributed to every step


def _group_privacy(events, *, delta: float, accountant: str) -> float:
    parts = accountants._split(events)
    ro, ar = parts["replace_one"], parts["add_remove"]
    if not (ar.gaussians or ar.skellams):
        return accountants.compose_epsilon(events, delta=delta, accountant=accountant)
    has_ro = bool(ro.gaussians or ro.rr or ro.skellams)
    return accountants._group_privacy(ro, ar, has_ro=has_ro, delta=delta, accountant=accountant)


def _ledgers(cfg, setup, *, group_calibration: bool) -> list[list]:
    sizes = [len(c.member_indices) for c in setup.partition.clients]
    steps = cfg.federation.local_steps * cfg.federation.rounds
    if cfg.federation.strategy == "layer-split":
        return [[DPSGDEvent(dp.noise_multiplier, dp.sample_rate, steps, "shared")]
                for dp in (dpsgd_params(cfg, n=n, steps_per_round=cfg.federation.local_steps) for n in sizes)]
    prior = []
    if cfg.federation.hybrid_forward:
        sigma = forward_sigma(float(setup.schedule.abar[setup.t0]))
        prior = [ForwardNoiseEvent(sigma=sigma, clip_norm=cfg.privacy.clip_norm, t0=setup.t0, data_id="x")]
    dim = sum(p.numel() for p in UNet(setup.spec).parameters() if p.requires_grad)

    def old(events, *, delta, accountant, relation=None):
        return _group_privacy(events, delta=delta, accountant=accountant)

    with mock.patch.object(distributed, "compose_epsilon", old) if group_calibration else _nothing():
        ddp = distributed.plan_distributed(cfg, sizes=sizes, dim=dim, prior_events=prior)
    event = distributed.skellam_event(ddp, survivors=SURVIVORS, steps=steps)
    return [prior + [event]]  # the same for every client


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def measure(seeds: int) -> list[dict]:
    suite, rows = get_suite("core"), []
    for method in (m for m in suite.methods if m.name in METHODS):
        # the hybrid cells' events do not depend on the partition seed (one plan over all records)
        for seed in range(seeds if method.strategy == "layer-split" else 1):
            cfg = load_config(None, cell_overrides(suite, method, seed=seed, quick=False, out_dir=Path("/tmp")))
            setup = set_up_run(cfg)
            variants = [("as run", True)] if cfg.federation.hybrid_forward else [("as run", False)]
            if cfg.federation.hybrid_forward:
                variants.append(("direct calibration", False))
            for label, group_cal in variants:
                ledgers = _ledgers(cfg, setup, group_calibration=group_cal)
                d, acc = cfg.privacy.delta, cfg.privacy.accountant
                t = time.perf_counter()
                claim = max(accountants.compose_epsilon(e, delta=d, accountant=acc) for e in ledgers)
                t_claim = time.perf_counter() - t
                t = time.perf_counter()
                group = max(_group_privacy(e, delta=d, accountant=acc) for e in ledgers)
                t_group = time.perf_counter() - t
                t = time.perf_counter()
                direct = [accountants.compose(e, delta=d, accountant=acc, relation="replace_one") for e in ledgers]
                t_direct = time.perf_counter() - t
                rows.append({
                    "method": method.name, "seed": seed, "ledger": label, "accountant": acc,
                    "claim": claim,
                    "claim_relation": ("replace_one" if any(e.relation == "replace_one" for e in ledgers[0])
                                       else "add_remove"),
                    "replace_one_group_privacy": group,
                    "replace_one_direct": max(c.epsilon for c in direct),
                    "methods": sorted({c.method for c in direct}),
                    "noise_multiplier_at_floor": (None if method.strategy == "layer-split" else
                                                  _skellam_z(ledgers[0][-1])),
                    "seconds": {"claim": t_claim, "group_privacy": t_group, "direct": t_direct},
                })
                print(json.dumps(rows[-1]), flush=True)
    return rows


def _skellam_z(event) -> float:
    """sqrt(noise variance at the floor) / (gamma C), as SkellamPlan.noise_multiplier."""
    floor_variance = event.noise_variance * event.min_survivors / SURVIVORS
    return floor_variance**0.5 / (event.l2_sensitivity - (event.l1_sensitivity / event.l2_sensitivity))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    rows = measure(args.seeds)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
