"""One protocol round that releases DP feature statistics (the mechanism and its
sensitivities: securediff/privacy/stats_release.py; docs/stats_release.md).

Every client maps each member record through the declared feature map, clips
it, and hands the protocol its contribution: per-class sums and its part of
the pooled second moment. With a Skellam plan (secagg) the contribution is
scaled to integers and carries the client's noise share, so the aggregator only
ever sees masked vectors and the noisy sum; with a Gaussian plan (plain, tee)
the contribution goes bare and the aggregator adds the noise to the sum, so the
guarantee holds only as far as the aggregator (or the enclave) is trusted.

Write-ahead: every client's ledger is charged the release at the noise floor
before anything leaves it (`charged` is called then, for the caller to persist
the ledgers). After the round, a Skellam charge is replaced by the event of the
noise that reached the sum (more contributors, more noise; never fewer than the
floor, below which secagg refuses to unmask). An aborted round keeps the floor
charge: its shares may have left.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from protocols import ClientInput, check_against_plain, run_round
from protocols.errors import ProtocolError
from protocols.roster import Identities
from protocols.stages import AggregationProtocol
from protocols.transcript import TranscriptWriter
from securediff.errors import ConfigError
from securediff.federation.clients import Client
from securediff.privacy.ledger import PrivacyLedger
from securediff.privacy.skellam import check_noise_floor, decode_sum, encode_share
from securediff.privacy.stats_decode import ReleasedStats, decode
from securediff.privacy.stats_release import GaussianStatsPlan, SkellamStatsPlan, contribution
from securediff.rng import RandomSource

StatsPlan = GaussianStatsPlan | SkellamStatsPlan
FeatureMap = Callable[[np.ndarray], np.ndarray]  # images (n, C, H, W) -> features (n, d)


@dataclass(frozen=True)
class StatsRelease:
    """What the round released and who is in it."""

    stats: ReleasedStats
    noisy_vector: np.ndarray  # the released vector, in its own units (before decoding)
    contributors: tuple[str, ...]
    bytes_up: int
    bytes_down: int


def protocol_params(plan: StatsPlan) -> dict:
    """What the protocol must be built with for this plan: integer shares need a
    ring wide enough for their sum, and secagg must refuse to unmask below the floor."""
    if isinstance(plan, SkellamStatsPlan):
        return {"value_bits": plan.skellam.secagg_value_bits,
                "min_contributors": plan.skellam.min_survivors}
    return {}


def client_contribution(client: Client, feature_map: FeatureMap, plan: StatsPlan) -> np.ndarray:
    """One client's contribution over its member records (float64, unnoised)."""
    images = client.x.detach().cpu().double().numpy()
    labels = client.y.detach().cpu().numpy().astype(np.int64)
    return contribution(feature_map(images), labels, plan.layout)


def _floor_event(plan: StatsPlan):
    if isinstance(plan, SkellamStatsPlan):
        return plan.event(survivors=plan.skellam.min_survivors)
    return plan.event()


def release_stats(
    clients: Sequence[Client], *, plan: StatsPlan, feature_map: FeatureMap,
    protocol: AggregationProtocol, identities: Identities, transcript: TranscriptWriter | None,
    round_index: int, aggregator_source: RandomSource, charged: Callable[[], None] = lambda: None,
    dropouts: Mapping[str, str] | None = None, min_eigenvalue: float = 0.0,
) -> StatsRelease:
    """Run the release round; `ProtocolAbort` if the protocol cannot release (the
    floor charge stays on every ledger). Counts per class are public (labels are)."""
    skellam = isinstance(plan, SkellamStatsPlan)
    if skellam != (protocol.name == "secagg"):
        raise ConfigError(f"a {'Skellam' if skellam else 'Gaussian'} statistics release runs on "
                          f"{'secagg' if skellam else 'plain or tee'}, not {protocol.name}")
    reservation = _floor_event(plan)
    before = {c.client_id: c.ledger.events for c in clients}
    for client in clients:
        client.ledger.charge(reservation)
    charged()  # durable before any contribution leaves a client

    inputs = {}
    for client in clients:
        v = client_contribution(client, feature_map, plan)
        if skellam:
            v = encode_share(v, plan.skellam, client.private_stream("stats-release", round_index))
        inputs[client.client_id] = ClientInput(vector=v, weight=1.0)
    result = run_round(protocol, round_index=round_index, inputs=inputs, identities=identities,
                       transcript=transcript, dropouts=dropouts,
                       random_bytes=aggregator_source.child("protocol").random_bytes)
    check = check_against_plain(protocol, inputs, result)
    if not check["ok"]:
        raise ProtocolError(f"the {protocol.name} aggregate differs from the plain sum by "
                            f"{check['max_abs_error']:.3g}")
    contributors = tuple(sorted(result.contributors))
    if skellam:
        check_noise_floor(plan.skellam, len(contributors))
        total = np.rint(np.asarray(result.weighted_sum, dtype=np.float64)).astype(np.int64)
        noisy = decode_sum(total, plan.skellam)
        realized = plan.event(survivors=len(contributors))
        for client in clients:  # the realized event costs at most the reservation it replaces
            ledger = PrivacyLedger(client_id=client.client_id, budget_epsilon=client.ledger.budget_epsilon,
                                   delta=client.ledger.delta, accountant=client.ledger.accountant,
                                   events=before[client.client_id], releases=client.ledger.releases)
            ledger.charge(realized)
            client.ledger = ledger
    else:
        noisy = plan.noised(np.asarray(result.weighted_sum, dtype=np.float64),
                            aggregator_source.child("gaussian"))
    included = set(contributors)
    labels = np.concatenate([c.y.detach().cpu().numpy().astype(np.int64)
                             for c in clients if c.client_id in included])
    counts = np.bincount(labels, minlength=plan.layout.num_classes).astype(np.int64)
    stats = decode(noisy, plan.layout, counts, min_eigenvalue=min_eigenvalue)
    return StatsRelease(stats=stats, noisy_vector=noisy, contributors=contributors,
                        bytes_up=int(result.bytes_up), bytes_down=int(result.bytes_down))
