"""Privacy statements: what each artefact of a run guarantees, to whom.

One row per artefact of DESIGN.md's table, with the numbers of this run. The
statement is stored in the run directory and printed by the CLI; in the
insecure deterministic test mode every row says "NOT PRIVATE". Where the
aggregator's blindness rests on something weaker than the protocol's name
suggests (a simulated enclave, a secret key every client holds), the statement
says so in `notices` and in the aggregator's row. What the claims take for
granted (public record counts, no client colluding against a distributed
noise floor) is listed in `assumptions`.

Where labels are declared public, a guarantee covers an image (its label is
released anyway); with randomized-response labels it covers a record, image
and label.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from protocols.tee import SIMULATED_NOTICE
from securediff.federation.public import public_notice
from securediff.strategy_rules import STRATEGY_RULES, SharedClaim, StrategyRules
from securediff.strategy_rules import eps_text as _eps

NOT_PRIVATE = "NOT PRIVATE: insecure deterministic test mode (seeded noise)"
# Every client holds the one CKKS secret key, so any client can decrypt any
# ciphertext the aggregator holds: a single colluding client unblinds it.
SINGLE_KEY_CKKS_NOTICE = "single-key ckks: not secure against an aggregator that colludes with any client"
# What the aggregator's blindness rests on, per protocol, said wherever the protocol is named.
SECAGG_UNCHECKED_NOTICE = ("secagg without the consistency check: an aggregator that sends clients "
                           "different survivor lists can learn individual inputs")
PROTOCOL_NOTICES = {"tee": SIMULATED_NOTICE, "ckks": SINGLE_KEY_CKKS_NOTICE}
# Where x~ is stored is who else holds the forward-noise view of it.
NOISED_DATA_IN_RUN_DIR = ("RUN/checkpoints/noised-data.safetensors (every client's): readable by "
                          "whoever has the run directory")
NOISED_DATA_ON_NODE = ("the node's STATE-DIR/noised-data.safetensors: readable by whoever can "
                       "read the node's state dir")
# Add/remove neighbours differ in the number of records: the claim protects a
# record's content and presence only if the count itself is not what is hidden.
PUBLIC_COUNT_ASSUMPTION = ("add/remove claims treat each client's record count as public "
                           "(they protect a record, not how many records a client holds)")
# A colluding client tells the aggregator its own noise share, which the
# aggregator then subtracts: the sum keeps only the honest clients' noise.
SKELLAM_COLLUSION_ASSUMPTION = ("the Skellam noise floor holds only if no client colludes with the "
                                "aggregator (a colluding client's noise share is known to it and "
                                "can be subtracted from the sum)")


# The classifier that scores synthetic samples for the metrics
# (securediff/evaluation/cache.py): a measuring instrument, not a release.
EVALUATOR_ARTEFACT = "evaluator (scores synthetic samples for the metrics)"
EVALUATOR_GUARANTEE = ("not private: trained without DP on the pooled raw records of every client; "
                       "never leaves this machine")


def protocol_notice(protocol_name: str, params: dict[str, Any]) -> str | None:
    """The caveat every statement of a run on this protocol repeats, if any."""
    if protocol_name == "secagg" and params.get("consistency_check") is False:
        return SECAGG_UNCHECKED_NOTICE
    return PROTOCOL_NOTICES.get(protocol_name)


@dataclass(frozen=True)
class StatementRow:
    artefact: str
    who_sees_it: str
    guarantee: str


def _samples(*, rules: StrategyRules, shared_epsilon: float, shared_relation: str,
             personal_epsilon: float, delta: float) -> str:
    """What samples of a client's pipeline carry: they are computed from the models
    the sampler runs (post-processing), so the composition of those models' claims.
    Basic composition, with the personal add/remove epsilon doubled by group
    privacy when the shared claim is replace-one: sound, not tight."""
    if not math.isfinite(personal_epsilon):
        others = ("; other clients' records: the shared guarantee (post-processing)"
                  if not rules.samples_personal_only and math.isfinite(shared_epsilon) else "")
        return "none for the client's own records: the personal denoiser has no DP-SGD" + others
    if rules.samples_personal_only:
        return (f"the personal denoiser's guarantee (its samples are post-processing of it): "
                f"add/remove {_eps(personal_epsilon)} at delta = {delta:g}")
    if not math.isfinite(shared_epsilon):
        return ("none: the shared part of the pipeline has no DP guarantee "
                f"(the personal denoiser alone: add/remove {_eps(personal_epsilon)})")
    if shared_relation == "replace-one":
        eps = shared_epsilon + 2.0 * personal_epsilon
        d = delta * (2.0 + math.exp(personal_epsilon))
        how = "the personal add/remove epsilon doubled by group privacy"
    else:
        eps, d, how = shared_epsilon + personal_epsilon, 2.0 * delta, "both add/remove"
    return (f"composition of the shared and personal denoisers it samples from: {shared_relation} "
            f"epsilon <= {eps:.3f} at delta <= {d:.3g} (basic composition of {_eps(shared_epsilon)} "
            f"and {_eps(personal_epsilon)}, {how})")


def privacy_statement(
    *,
    strategy: str,
    protocol_secure: bool,
    protocol_name: str,
    private: bool,
    delta: float,
    t0: int,
    clip_norm: float,
    forward_exact: float,
    forward_classic: float,
    shared_epsilon: float,
    personal_epsilon: float,
    accountant: str,
    labels: str,
    label_epsilon: float,
    adaptive_quantile: float | None = None,
    hybrid_forward: bool = False,
    protocol_params: dict[str, Any] | None = None,
    noised_data_stored: str = NOISED_DATA_IN_RUN_DIR,
    client_level: dict[str, Any] | None = None,
    public: dict[str, Any] | None = None,
    stats_release: dict[str, Any] | None = None,
    release_use: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Rows of the statement and the run's headline epsilon (max over clients).
    `adaptive_quantile`: the target quantile of adaptive clipping, None if fixed.
    `public`: the provenance of the public pretraining data (a notice), None if none.
    `stats_release`: the record of the run's statistics release
    (stats-release.json), None if the run released none. `release_use`: how a
    strategy built on the release uses it (handoff_t, below_handoff, style_restored),
    None for the others."""
    label_note = (
        "class labels are declared PUBLIC and are released unprotected in the shared path"
        if labels == "public"
        else f"labels pass the shared path by randomized response (epsilon {label_epsilon:g}, in the ledger)"
    )
    notice = protocol_notice(protocol_name, protocol_params or {})
    aggregator = (
        f"aggregator ({protocol_name}: sees only the aggregate"
        + ("" if notice is None else f"; {notice}") + ")"
        if protocol_secure
        else f"aggregator ({protocol_name}, INSECURE: sees every client's update)"
    )
    rules = STRATEGY_RULES[strategy]
    rows: list[StatementRow] = []
    if rules.noises_data(hybrid_forward=hybrid_forward):
        rows.append(StatementRow(
            "noised data x~", f"the client's shared-model trainer; stored in {noised_data_stored}",
            f"replace-one Gaussian per image at t0 = {t0}, C = {clip_norm:g}: epsilon = {forward_exact:.3f} "
            f"(exact, Balle & Wang 2018), {forward_classic:.3f} (classic bound) at delta = {delta:g}"
            + ("" if adaptive_quantile is None else
               f"; C is the private {adaptive_quantile:g}-quantile of the clients' image norms "
               "(noised counts, in the ledger; the shared epsilon below composes both)"),
        ))
    use = release_use or {}
    claim = SharedClaim(
        epsilon=shared_epsilon, accountant=accountant, delta=delta, label_note=label_note,
        protocol_name=protocol_name, hybrid_forward=hybrid_forward, adaptive_quantile=adaptive_quantile,
        client_level=client_level is not None,
        release_epsilon=None if stats_release is None else stats_release["epsilon"][stats_release["relation"]],
        handoff_t=use.get("handoff_t"), below_handoff=use.get("below_handoff"),
        style_restored=bool(use.get("style_restored", False)))
    shared_text = rules.shared_guarantee(claim)
    rows.append(StatementRow("shared denoiser and its updates", f"{aggregator}; all clients", shared_text))
    if client_level is not None:
        rows.append(client_level_row(client_level, protocol_name=protocol_name, delta=delta))
    if stats_release is not None:
        rows.append(stats_release_row(stats_release))
    personal = ("DP-SGD, add/remove per record: " + _eps(personal_epsilon) + f" ({accountant}, delta = {delta:g})"
                if math.isfinite(personal_epsilon) else "none: trained on the client's raw data without DP-SGD")
    rows.append(StatementRow("personal denoiser", "its client", rules.personal_guarantee(personal, claim)))
    shared_relation = rules.shared_relation(hybrid_forward=hybrid_forward)
    samples = rules.samples_guarantee(_samples(
        rules=rules, shared_epsilon=shared_epsilon, shared_relation=shared_relation,
        personal_epsilon=personal_epsilon, delta=delta), claim)
    rows.append(StatementRow("synthetic samples of a client", "whoever the client releases them to", samples))
    rows.append(StatementRow(
        "transcript", "reviewers",
        "masked / encrypted payloads only" if protocol_secure
        else "payload digests and sizes only (the plain protocol's payloads are unmasked updates)",
    ))
    rows.append(StatementRow(EVALUATOR_ARTEFACT, "this machine only (a per-user cache outside run "
                             "directories; export never copies it)", EVALUATOR_GUARANTEE))
    if not private:
        rows = [StatementRow(r.artefact, r.who_sees_it, f"{NOT_PRIVATE}. {r.guarantee}") for r in rows]
    add_remove_claim = math.isfinite(personal_epsilon) or (
        shared_relation == "add/remove" and math.isfinite(shared_epsilon))
    assumptions = [PUBLIC_COUNT_ASSUMPTION] if add_remove_claim else []
    if stats_release is not None and stats_release["relation"] == "add_remove" \
            and PUBLIC_COUNT_ASSUMPTION not in assumptions:
        assumptions.append(PUBLIC_COUNT_ASSUMPTION)
    if rules.distributed or (stats_release is not None and stats_release["mechanism"] == "skellam"):
        assumptions.append(SKELLAM_COLLUSION_ASSUMPTION)  # Skellam shares summed by secure aggregation
    return {
        "private": private,
        "headline": {
            "artefact": rules.headline_artefact,
            "epsilon": shared_epsilon if math.isfinite(shared_epsilon) else None,
            "delta": delta,
            "accountant": accountant,
            "per": ("image (labels public), per client (max over clients)" if labels == "public"
                    else "record (image and label), per client (max over clients)"),
        },
        "labels": labels,
        "notices": ([] if notice is None else [notice]) + ([] if public is None else [public_notice(public)]),
        "assumptions": assumptions,
        "rows": [asdict(r) for r in rows],
    }


def client_level_row(cl: dict[str, Any], *, protocol_name: str, delta: float) -> StatementRow:
    """The client-level claim: the unit is one client's whole shared update.
    `cl`: mechanism, clip, noise_multiplier, sample_rate, rounds, epsilon, accountant."""
    if cl["mechanism"] == "skellam":
        who = (f"the aggregator (only the sum of the clients' Skellam-noised shares, through {protocol_name}); "
               "all clients; whoever gets the shared model")
        noise = "Skellam shares added by the clients and summed by secagg (no party sees a noise-free sum)"
    else:
        who = ("all clients and whoever gets the shared model; NOT the aggregator, which adds the noise "
               f"to the sum {protocol_name} released and so sees that sum noise-free")
        noise = f"Gaussian noise (std {cl['noise_multiplier']:.4g} x the clip) added by the aggregator"
    return StatementRow(
        "shared denoiser, per client (client-level DP)", who,
        f"add/remove of one client's whole shared update: each clipped to L2 norm {cl['clip']:g}, {noise}"
        + (f", every client in each of {cl['rounds']} rounds: " if cl["sample_rate"] == 1.0 else
           f", clients Poisson-sampled at q = {cl['sample_rate']:g} over {cl['rounds']} rounds: ")
        + f"{_eps(cl['epsilon'])} ({cl['accountant']}, delta = {delta:g}, max over clients); who took part is "
        "not protected (the aggregator sees the survivor list)")


def stats_release_row(rel: dict[str, Any]) -> StatementRow:
    """The statistics release's claim (securediff/federation/stats_phase.py): its
    mechanism, who adds the noise, the relation and its epsilon."""
    protocol = rel["protocol"]
    if rel["mechanism"] == "skellam":
        who = (f"the aggregator (only the sum of the clients' Skellam-noised shares, through {protocol}); "
               "all clients; whoever gets the release")
        noise = (f"Skellam shares added by the clients and summed by {protocol} (no party sees a noise-free "
                 f"sum), the noise of {len(rel['contributors'])} clients' shares (the floor: "
                 f"{rel['noise']['min_survivors']})")
    else:
        who = ("all clients and whoever gets the release; NOT the aggregator, which adds the noise to the "
               f"sum {protocol} released and so sees that sum noise-free")
        noise = "Gaussian noise added by the aggregator"
    relation = rel["relation"].replace("_", "-").replace("add-remove", "add/remove")
    moment = "full" if rel["moment_rank"] == 0 else f"of the top {rel['moment_rank']} public principal directions"
    return StatementRow(
        "feature statistics (per-class sums and second moment, released once)", who,
        f"{relation} per image (labels public): every member record once, its {rel['feature_map']} features clipped to "
        f"L2 norm {rel['clip']:.4g}, the second moment {moment}; {noise}: "
        f"{_eps(rel['epsilon'][rel['relation']])} ({rel['accountant']}, delta = {rel['delta']:g}); "
        "per-class counts released as they are (labels public); charged to the shared ledger")


def statement_markdown(statement: dict[str, Any]) -> str:
    lines = ["# Privacy statement", ""]
    if not statement["private"]:
        lines += [f"**{NOT_PRIVATE}.**", ""]
    for notice in statement.get("notices", []):  # none in statements stored before notices
        lines += [f"**{notice}.**", ""]
    lines += ["| artefact | who sees it | guarantee |", "|---|---|---|"]
    lines += [f"| {r['artefact']} | {r['who_sees_it']} | {r['guarantee']} |" for r in statement["rows"]]
    assumptions = statement.get("assumptions", [])  # none in statements stored before them
    if assumptions:
        lines += ["", "Assumptions:", ""] + [f"- {a}." for a in assumptions]
    return "\n".join(lines) + "\n"
