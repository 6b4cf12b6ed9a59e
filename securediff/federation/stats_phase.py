"""The statistics release of a run ([stats] release = true): one protocol round,
before the first training round, that releases DP per-class feature sums and
their second moment (securediff/federation/stats_round.py; docs/stats_release.md).

Planned at set-up (`plan_release`, so that the run's budget covers it): the
layout from the data's shape and classes, the clip (stats.clip, or the median
feature norm of the public data), the moment projection (the top
stats.moment_rank principal directions of the public features), and the noise
for stats.epsilon under the neighbouring relation of the run's shared claim
(replace-one where the shared path is forward-noised or the strategy is built on
the release alone; the release's ledger events state their claim under it), at
the noise floor
privacy.ddp_min_survivors (0: 80% of the clients) for Skellam shares on secagg,
or as the aggregator's Gaussian on plain and tee.

Run once (`release_once`): its own protocol instance bound to the session's
identities, its own transcript (stats-transcript.jsonl, beside roster.json, so
`securediff transcript verify RUN/stats-transcript.jsonl` checks it) and its
own secagg answer log. The ledgers are written in `charged`, before anything
leaves a client. The result is committed by stats-release.json, written last
and naming the digest of stats-release.safetensors; a run whose JSON exists
loads the release and never releases again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from protocols import Identities, TranscriptWriter, make_protocol
from protocols.secagg.answers import FileAnswerLog
from protocols.transcript import last_round_index
from securediff.errors import CheckpointError, ConfigError
from securediff.federation.budget import UNCAPPED, remaining_plan_budget
from securediff.federation.distributed import min_survivors_for
from securediff.federation.public import load_public
from securediff.federation.setup import RunSetup
from securediff.federation.stats_round import FeatureMap, StatsPlan, protocol_params, release_stats
from securediff.privacy.accountants import RELATIONS, compose
from securediff.privacy.ledger import PrivacyLedger
from securediff.privacy.stats_decode import ReleasedStats
from securediff.privacy.stats_release import (
    SkellamStatsPlan,
    StatsLayout,
    colour_normalised_grey,
    identity,
    plan_gaussian_stats,
    plan_skellam_stats,
)
from securediff.rng import RandomSource
from securediff.storage import atomic_write_json, load_tensors, read_json, save_tensors

if TYPE_CHECKING:
    from securediff.federation.runner import FederatedRun

RELEASE_JSON = "stats-release.json"
RELEASE_TENSORS = "stats-release.safetensors"
RELEASE_TRANSCRIPT = "stats-transcript.jsonl"
RELEASE_ANSWERS = "stats-answers.jsonl"
RELEASE_KINDS = ("gaussian_release", "skellam_release")
FEATURE_MAPS: dict[str, FeatureMap] = {"identity": identity,
                                       "colour-normalised-grey": colour_normalised_grey}


@dataclass(frozen=True, eq=False)
class ReleasePlan:
    """What the release will run with: the noise plan, the feature map, and where
    the clip came from ("stats.clip" or the public data's median feature norm)."""

    stats: StatsPlan
    feature_map: FeatureMap
    clip_from: str

    @property
    def floor_event(self):
        """The event of a release at the noise floor: what the budget plans for."""
        if isinstance(self.stats, SkellamStatsPlan):
            return self.stats.event(survivors=self.stats.skellam.min_survivors)
        return self.stats.event()


@dataclass(frozen=True)
class StoredRelease:
    """A committed release: its decoded statistics, the released vector, and the
    plan record of stats-release.json."""

    stats: ReleasedStats
    noisy_vector: np.ndarray
    record: dict[str, Any]


def run_relation(setup: RunSetup) -> str:
    """The neighbouring relation of the run's shared claim, in the accountants' spelling."""
    f = setup.config.federation
    return f.strategy_rules.shared_relation(hybrid_forward=f.hybrid_forward).replace("-", "_").replace("/", "_")


def _public_features(setup: RunSetup, feature_map: FeatureMap, source: RandomSource) -> np.ndarray:
    data = load_public(setup, generator=source.numpy_generator())
    return feature_map(data.images.astype(np.float64))


def _projection(features: np.ndarray, rank: int) -> np.ndarray:
    """The top `rank` principal directions (orthonormal rows) of public features."""
    centred = features - features.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return vt[:rank]


def plan_release(setup: RunSetup, *, public_source: RandomSource) -> ReleasePlan:
    """The release's plan (module docstring). `public_source` draws the public
    data's augmentations, if any (public: nothing to hide)."""
    cfg = setup.config
    s, p = cfg.stats, cfg.privacy
    feature_map = FEATURE_MAPS[s.feature_map]
    dim = int(feature_map(setup.dataset.images[:1].astype(np.float64)).shape[1])
    public = (_public_features(setup, feature_map, public_source)
              if s.clip == 0 or s.moment_rank > 0 else None)
    if s.moment_rank > dim:
        raise ConfigError(f"stats.moment_rank = {s.moment_rank} is not allowed: at most the feature "
                          f"dimension {dim} of stats.feature_map = {s.feature_map!r}")
    clip, clip_from = s.clip, "stats.clip"
    if clip == 0:
        clip = float(np.median(np.linalg.norm(public, axis=1)))
        clip_from = f"the median feature norm of public.dataset = {cfg.public.dataset!r}"
        if not (clip > 0 and math.isfinite(clip)):
            raise ConfigError(f"stats.clip = 0 is not allowed here: the median feature norm of the "
                              f"public data is {clip}; set a positive stats.clip")
    layout = StatsLayout(num_classes=setup.dataset.num_classes, dim=dim, clip_norm=clip,
                         moment_projection=_projection(public, s.moment_rank) if s.moment_rank else None)
    relation = run_relation(setup)
    sizes = [len(c.member_indices) for c in setup.partition.clients]
    if cfg.federation.protocol == "secagg":
        stats = plan_skellam_stats(layout, target_epsilon=s.epsilon, delta=p.delta, relation=relation,
                                   min_survivors=min_survivors_for(p.ddp_min_survivors, len(sizes)),
                                   max_clients=len(sizes), total_records=sum(sizes))
    else:
        stats = plan_gaussian_stats(layout, target_epsilon=s.epsilon, delta=p.delta, relation=relation,
                                    accountant=p.accountant)
    return ReleasePlan(stats=stats, feature_map=feature_map, clip_from=clip_from)


def load_release(run_dir) -> StoredRelease | None:
    """The committed release of the run directory, or None if none was committed."""
    path = run_dir.file(RELEASE_JSON)
    if not path.exists():
        return None
    record = read_json(path)
    try:
        tensors = load_tensors(run_dir.file(RELEASE_TENSORS), expected_sha256=record["tensors_sha256"])
        arrays = {k: v.numpy() for k, v in tensors.items()}
        stats = ReleasedStats(sums=arrays["sums"], means=arrays["means"],
                              second_moment=arrays["second_moment"],
                              residual_energy=float(record["residual_energy"]),
                              covariance=arrays["covariance"], counts=arrays["counts"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} does not describe a stored release: {exc}") from None
    return StoredRelease(stats=stats, noisy_vector=arrays["noisy_vector"], record=record)


def _recharge_budgets(run: FederatedRun) -> None:
    """A ledger that holds a release that was never committed (a crash between the
    charge and the save) is charged again by this release: its budget grows by
    exactly that, and the run says so."""
    s, budget = run.state, run.budget
    event = run.stats_plan.floor_event
    for client in s.clients:
        if not any(e.kind in RELEASE_KINDS for e in client.ledger.events):
            continue
        trial = PrivacyLedger(client_id=client.client_id, budget_epsilon=UNCAPPED,
                              delta=client.ledger.delta, accountant=client.ledger.accountant,
                              events=client.ledger.events, releases=client.ledger.releases)
        trial.charge(event)
        before = client.ledger.budget_epsilon
        cap = max(before, remaining_plan_budget(budget, run.cfg, trial, rounds_done=s.rounds_done,
                                                distributed=s.strategy.distributed))
        if cap > before:
            client.ledger.budget_epsilon = cap
            run.progress("ledger_recharge", {"client": client.client_id, "budget_before": before,
                                             "budget_after": cap})


def release_once(run: FederatedRun, identities: Identities) -> StoredRelease:
    """The run's release: loaded if committed, else run now and committed.

    Write-ahead, as every round: the ledgers are on disk before any contribution
    leaves a client. A crash between that charge and the commit leaves the charge
    on the ledgers and no release on disk, so the next start releases again and
    charges again (the contributions may have left: the first charge stays)."""
    stored = load_release(run.run_dir)
    if stored is not None:
        return stored
    cfg, release_plan = run.cfg, run.stats_plan
    plan = release_plan.stats
    _recharge_budgets(run)
    params = {**cfg.protocol, **protocol_params(plan)}
    protocol = make_protocol(cfg.federation.protocol, **params).bind(identities)
    if hasattr(protocol, "with_answers"):  # its own round indices: never the training rounds' log
        protocol = protocol.with_answers(FileAnswerLog(run.run_dir.file(RELEASE_ANSWERS)))
    transcript_path = run.run_dir.file(RELEASE_TRANSCRIPT)
    round_index = last_round_index(transcript_path) + 1  # a release redone after a crash moves on
    run.progress("stats_release_start", {"protocol": protocol.name, "round_index": round_index})
    with TranscriptWriter.open(transcript_path, identities=identities, protocol=protocol,
                               planned_rounds=(round_index, round_index + 1)) as transcript:
        out = release_stats(run.state.clients, plan=plan, feature_map=release_plan.feature_map,
                            protocol=protocol, identities=identities, transcript=transcript,
                            round_index=round_index,
                            aggregator_source=run.source.child(f"stats-release/{round_index}"),
                            charged=run.write_ledgers)
    run.write_ledgers()  # a Skellam charge settled to the realized contributors
    stats = out.stats
    tensors = {"noisy_vector": out.noisy_vector, "sums": stats.sums, "means": stats.means,
               "second_moment": stats.second_moment, "covariance": stats.covariance,
               "counts": stats.counts}
    if plan.layout.moment_projection is not None:
        tensors["moment_projection"] = plan.layout.moment_projection
    digest = save_tensors(run.run_dir.file(RELEASE_TENSORS),
                          {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()})
    record = _record(run, release_plan, out.contributors, round_index=round_index,
                     protocol_name=protocol.name, residual_energy=stats.residual_energy)
    atomic_write_json(run.run_dir.file(RELEASE_JSON), {**record, "tensors_sha256": digest})
    run.progress("stats_release", {"contributors": len(out.contributors),
                                   "epsilon": record["epsilon"][record["relation"]]})
    return load_release(run.run_dir)


def _record(run: FederatedRun, release_plan: ReleasePlan, contributors: tuple[str, ...], *,
            round_index: int, protocol_name: str, residual_energy: float) -> dict[str, Any]:
    """The plan of a release as stats-release.json keeps it."""
    cfg, plan = run.cfg, release_plan.stats
    layout = plan.layout
    if isinstance(plan, SkellamStatsPlan):
        event = plan.event(survivors=len(contributors))
        sk = plan.skellam
        (l1, l2), (l1_ro, l2_ro) = plan.sensitivities_add_remove, plan.sensitivities_replace_one
        mechanism, accountant = "skellam", "rdp"
        noise = {"scale": sk.scale, "share_variance": sk.share_variance, "min_survivors": sk.min_survivors,
                 "noise_variance": event.noise_variance,
                 "std_released_units": math.sqrt(event.noise_variance) / sk.scale}
        sensitivities = {"l1_add_remove": l1, "l2_add_remove": l2, "l1_replace_one": l1_ro,
                         "l2_replace_one": l2_ro, "units": "integers (scaled shares)"}
    else:
        event = plan.event()
        mechanism, accountant = "gaussian", cfg.privacy.accountant
        noise = {"std_released_units": plan.noise_std}
        sensitivities = {"l2_add_remove": layout.l2_add_remove, "l2_replace_one": layout.l2_replace_one,
                         "units": "the released vector (features / clip)"}
    delta = cfg.privacy.delta
    # The same mechanism under each relation (the event states its claim under the
    # release's own; read under the other, it is that relation's analysis).
    epsilon = {rel: compose([replace(event, relation=rel)], delta=delta, accountant=accountant).epsilon
               for rel in RELATIONS}
    return {
        "mechanism": mechanism,
        "noise_added_by": "clients" if mechanism == "skellam" else "aggregator",
        "protocol": protocol_name, "round_index": round_index,
        "feature_map": cfg.stats.feature_map, "clip": layout.clip_norm, "clip_from": release_plan.clip_from,
        "moment_rank": layout.moment_dim if layout.moment_projection is not None else 0,
        "num_classes": layout.num_classes, "dim": layout.dim, "size": layout.size,
        "relation": run_relation(run.setup), "target_epsilon": cfg.stats.epsilon, "delta": delta,
        "accountant": accountant, "epsilon": epsilon, "noise": noise, "sensitivities": sensitivities,
        "contributors": list(contributors), "residual_energy": residual_energy,
    }


__all__ = ["ReleasePlan", "StoredRelease", "load_release", "plan_release", "release_once", "run_relation"]
