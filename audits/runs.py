"""Audit a finished run directory: every attack against the shared denoiser
(records of every client pooled) and against each personal denoiser, each
read against the epsilon its ledger claims for that artefact.

Members and non-members are the run's own split (`partition.json`): a
client's members were trained on, its holdout never was. They are records of
one trained model, not independent trials, so every bound here is a
measurement (verdict "measurement"), read beside the claim but deciding no
verdict; the canary audits (`securediff audit selfcheck`) give verdicts. The auditor's
randomness (reference/evaluated split, noise draws, shadow models) is
injected; nothing here touches the run's own random streams.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from audits.attacks import ATTACKS
from audits.attacks.base import AttackScores, AuditSplit, split_records
from audits.attacks.evaluate import AttackReport, evaluate_attack
from audits.attacks.lira import lira_attack
from audits.attacks.loss import loss_attack
from audits.attacks.memorization import MemorizationReport, memorization_report
from audits.attacks.pia import pia_attack
from audits.attacks.secmi import secmi_attack
from audits.attacks.shadows import ShadowRecipe
from audits.attacks.target import Records, Target
from audits.bounds.verdict import MEASUREMENT, strongest
from securediff.data import Partition
from securediff.errors import CheckpointError, ConfigError
from securediff.federation.clients import Client
from securediff.federation.evaluate import sample_client
from securediff.federation.runner import FederatedRun
from securediff.reopen import open_finished
from securediff.rng import RandomSource

TARGET_KINDS: tuple[str, ...] = ("all", "shared", "personal")
POOLED_PERSONAL = "personal:all-clients"


@dataclass(frozen=True)
class AuditOptions:
    attacks: tuple[str, ...] = ATTACKS
    targets: str = "all"
    clients: tuple[str, ...] | None = None
    shadows: int = 4
    shadow_steps: int = 200
    draws: int = 4
    samples_per_class: int = 10
    confidence: float = 0.95
    ref_fraction: float = 0.5
    device: str = "auto"

    def __post_init__(self) -> None:
        unknown = set(self.attacks) - set(ATTACKS)
        if unknown or not self.attacks:
            raise ConfigError(f"unknown attack(s) {sorted(unknown)}; known: {', '.join(ATTACKS)}")
        if self.targets not in TARGET_KINDS:
            raise ConfigError(f"targets must be one of {TARGET_KINDS}, got {self.targets!r}")
        lira = any(a.startswith("lira") for a in self.attacks)
        if lira and (self.shadows < 2 or self.shadows % 2 or self.shadow_steps < 1):
            raise ConfigError("LiRA needs an even number of shadows >= 2 and shadow_steps >= 1")
        if self.draws < 1 or self.samples_per_class < 1:
            raise ConfigError("draws and samples_per_class must be >= 1")


@dataclass(frozen=True)
class Population:
    members: Records
    holdout: Records


def _claim(client: Client, artefact: str) -> tuple[float | None, str | None]:
    row = client.ledger.summary()["artefacts"].get(artefact)
    if row is None:
        return None, None
    return float(row["claimed"]["epsilon"]), str(row["claimed"]["accountant"])


def _max_claim(claims: list[tuple[float | None, str | None]]) -> tuple[float | None, str | None]:
    """A pooled audit is read against the largest claim: a record of client c is
    eps_c-DP, so every record is max_c eps_c-DP. Any client without a claim: none."""
    if not claims or any(eps is None for eps, _ in claims):
        return None, None
    eps, acc = max(claims, key=lambda c: c[0])
    return eps, acc


def _populations(run: FederatedRun, run_dir: Path, clients: list[Client]) -> dict[str, Population]:
    setup = run.setup
    recorded = Partition.from_json((run_dir / "partition.json").read_text())
    if recorded != setup.partition:
        raise CheckpointError(f"{run_dir}/partition.json differs from the partition its config rebuilds")
    out = {}
    for client in clients:
        split = recorded.clients[client.index]

        def records(idx: np.ndarray, index: int = client.index) -> Records:
            return Records(torch.from_numpy(setup.client_images(index, idx)),
                           torch.from_numpy(setup.dataset.labels[idx]))

        out[client.client_id] = Population(records(split.member_indices),
                                           records(split.holdout_indices))
    return out


def _targets(run: FederatedRun, clients: list[Client], kind: str) -> list[tuple[Target, list[Client]]]:
    strategy, setup = run.state.strategy, run.setup
    clip = run.cfg.privacy.clip_norm
    shared, personal = [], []
    for client in clients:
        for seg in strategy.segments(client):
            is_shared = seg.model is strategy.global_model
            name = "shared" if is_shared else f"personal:{client.client_id}"
            target = Target(name=name, model=seg.model, start=seg.start, end=seg.end,
                            schedule=setup.schedule, null_label=setup.spec.null_label,
                            clip_norm=clip if seg.start > 0 else None)
            if is_shared and not shared:
                shared.append((target, list(clients)))
            elif not is_shared:
                personal.append((target, [client]))
    chosen = {"all": shared + personal, "shared": shared, "personal": personal}[kind]
    if not chosen:
        raise ConfigError(f"this run has no {kind} denoiser to audit")
    return chosen


def _attack(name: str, target: Target, split: AuditSplit, recipe: ShadowRecipe,
            options: AuditOptions, source: RandomSource, cache: dict[str, AttackScores]
            ) -> AttackScores:
    if name in cache:
        return cache[name]
    gen = source.child(f"{target.name}/{name}").torch_generator()
    if name == "loss":
        cache[name] = loss_attack(target, split, generator=gen, draws=options.draws)
    elif name == "secmi":
        cache[name] = secmi_attack(target, split)
    elif name == "pia":
        cache[name] = pia_attack(target, split)
    else:
        rng = source.child(f"{target.name}/lira-membership").numpy_generator()
        cache["lira-offline"], cache["lira-online"] = lira_attack(
            target, split, train_shadow=recipe.train, shadows=options.shadows,
            draws=options.draws, generator=source.child(f"{target.name}/lira").torch_generator(),
            rng=rng)
    return cache[name]


def _pooled_split(parts: list[AuditSplit], source: RandomSource) -> AuditSplit:
    """Every client's split side by side, the reference non-members shuffled so that
    the half steering hyperparameter choices is a random half across clients."""
    cat = lambda field: Records.concat([getattr(p, field) for p in parts])  # noqa: E731
    ref_n = cat("ref_nonmembers")
    order = source.child("split/shared").numpy_generator().permutation(len(ref_n))
    return AuditSplit(cat("ref_members"), ref_n.take(order), cat("eval_members"),
                      cat("eval_nonmembers"))


def _pooled(parts: list[AttackScores], name: str) -> AttackScores:
    """Per-client scores side by side; the reference non-members that steered each
    client's choices first, those held back from every choice after them."""
    cat = lambda field: np.concatenate([getattr(p, field) for p in parts])  # noqa: E731
    steered = [p.ref_nonmembers[:p.selection_nonmembers] for p in parts]
    held = [p.ref_nonmembers[p.selection_nonmembers:] for p in parts]
    return AttackScores(name, POOLED_PERSONAL, cat("ref_members"), np.concatenate(steered + held),
                        cat("eval_members"), cat("eval_nonmembers"),
                        details={"pooled_over": [p.target for p in parts]},
                        selection=sum(s.size for s in steered))


def _memorization(run: FederatedRun, clients: list[Client], pops: dict[str, Population],
                  options: AuditOptions, source: RandomSource) -> dict[str, Any]:
    out: dict[str, Any] = {}
    reports: list[MemorizationReport] = []
    for client in clients:
        gen = source.child(f"memorization/{client.client_id}/samples").torch_generator()
        samples, _ = sample_client(run.state.strategy, client, run.setup,
                                   per_class=options.samples_per_class, generator=gen,
                                   device=run.device)
        pop = pops[client.client_id]
        rep = memorization_report(
            samples=samples, members=pop.members.x.numpy(), holdout=pop.holdout.x.numpy(),
            rng=source.child(f"memorization/{client.client_id}").numpy_generator(),
            confidence=options.confidence)
        reports.append(rep)
        out[client.client_id] = rep.to_dict()
    n = sum(r.samples for r in reports)
    k = sum(r.closer_to_member for r in reports)
    from scipy.stats import binom

    out["pooled"] = {
        "samples": n, "closer_to_member": k, "closer_to_member_fraction": k / n,
        "p_value": float(binom.sf(k - 1, n, 0.5)),
        **{f: sum(getattr(r, f) for r in reports) for f in (
            "near_copies_of_members", "near_copies_of_holdout", "near_copies_of_all_members",
            "filtered_candidates", "extracted")},
    }
    return out


def _headline(rows: list[AttackReport]) -> AttackReport:
    claimed = [r for r in rows if r.bound_above_claim is not None]
    pool = claimed or rows
    return max(pool, key=lambda r: (r.bound.epsilon_lower_bound, r.auc.value))


def audit_run(run_dir: Path, *, options: AuditOptions, source: RandomSource,
              progress=None) -> tuple[dict[str, Any], list[AttackReport]]:
    """Run the audits; returns the JSON-ready result and the attack reports (for plots)."""
    say = progress or (lambda _msg: None)
    started = time.perf_counter()
    run_dir = Path(run_dir)
    run = open_finished(run_dir, device=options.device)
    cfg, setup = run.cfg, run.setup
    clients = run.state.clients
    if options.clients is not None:
        known = {c.client_id for c in clients}
        missing = sorted(set(options.clients) - known)
        if missing:
            raise ConfigError(f"no client(s) {missing} in {run_dir}; known: {', '.join(sorted(known))}")
        clients = [c for c in clients if c.client_id in options.clients]
    pops = _populations(run, run_dir, clients)
    splits = {cid: split_records(members=p.members, nonmembers=p.holdout,
                                 ref_fraction=options.ref_fraction,
                                 rng=source.child(f"split/{cid}").numpy_generator())
              for cid, p in pops.items()}
    score_attacks = [a for a in options.attacks if a != "memorization"]
    targets_out: list[dict[str, Any]] = []
    reports: list[AttackReport] = []
    personal_scores: dict[str, list[AttackScores]] = {a: [] for a in score_attacks}
    personal_claims = []
    for target, owners in _targets(run, clients, options.targets):
        if target.name == "shared":
            claim = _max_claim([_claim(c, "shared") for c in owners])
            split = _pooled_split([splits[c.client_id] for c in owners], source)
        else:
            claim = _claim(owners[0], cfg.federation.strategy_rules.client_model_artefact)
            personal_claims.append(claim)
            split = splits[owners[0].client_id]
        recipe = ShadowRecipe(name=target.name, spec=setup.spec, schedule=setup.schedule,
                              start=target.start, end=target.end, steps=options.shadow_steps,
                              batch_size=cfg.training.batch_size, lr=cfg.training.lr,
                              label_dropout=cfg.diffusion.label_dropout, clip_norm=target.clip_norm)
        cache: dict[str, AttackScores] = {}
        rows = []
        for name in score_attacks:
            say(f"{target.name}: {name}")
            scores = _attack(name, target, split, recipe, options, source, cache)
            if target.name != "shared":
                personal_scores[name].append(scores)
            rows.append(evaluate_attack(scores, claimed=claim[0], accountant=claim[1],
                                        delta=cfg.privacy.delta, confidence=options.confidence))
        reports += rows
        targets_out.append({"target": target.name, "segment": [target.start, target.end],
                            "epsilon_claimed": claim[0], "accountant": claim[1],
                            "members": len(split.ref_members) + len(split.eval_members),
                            "nonmembers": len(split.ref_nonmembers) + len(split.eval_nonmembers),
                            "attacks": [r.to_dict() for r in rows]})
    if len(personal_claims) > 1 and score_attacks:
        claim = _max_claim(personal_claims)
        rows = [evaluate_attack(_pooled(personal_scores[a], a), claimed=claim[0], accountant=claim[1],
                                delta=cfg.privacy.delta, confidence=options.confidence)
                for a in score_attacks]
        reports += rows
        targets_out.append({"target": POOLED_PERSONAL, "segment": None, "epsilon_claimed": claim[0],
                            "accountant": claim[1],
                            "members": sum(len(pops[c.client_id].members) for c in clients),
                            "nonmembers": sum(len(pops[c.client_id].holdout) for c in clients),
                            "attacks": [r.to_dict() for r in rows]})
    memorization = None
    if "memorization" in options.attacks:
        say("memorization")
        memorization = _memorization(run, clients, pops, options, source)
    result: dict[str, Any] = {
        "format": 1, "run_dir": str(run_dir), "private": cfg.private,
        "strategy": cfg.federation.strategy, "delta": cfg.privacy.delta,
        "options": {**asdict(options), "attacks": list(options.attacks),
                    "clients": None if options.clients is None else list(options.clients)},
        "targets": targets_out, "memorization": memorization,
    }
    if reports:
        head = _headline(reports)
        d = head.to_dict()
        result.update({k: d[k] for k in ("epsilon_claimed", "accountant", "epsilon_lower_bound",
                                         "ceiling", "method", "confidence", "auc", "tpr_at_fpr")})
        result["headline"] = {"target": head.target, "attack": head.attack}
        result["verdict"] = strongest([r.verdict for r in reports])
    else:
        result.update({"epsilon_claimed": None, "accountant": None, "epsilon_lower_bound": None,
                       "ceiling": None, "method": None, "confidence": options.confidence,
                       "auc": None, "tpr_at_fpr": {"0.01": None, "0.001": None},
                       "headline": None, "verdict": MEASUREMENT})
    result["seconds"] = time.perf_counter() - started
    return jsonable(result), reports


def jsonable(value: Any) -> Any:
    """JSON has no infinity or NaN: write them as null."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value

