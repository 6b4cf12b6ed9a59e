"""What a reviewer checks in a ckks round from its transcript alone.

The aggregator signs every message it sends into the transcript, each with a
small `meta` (the keyholder, the contributor list, who is asked to decrypt and
who signed), so these rules need no payloads:

- one keyholder named to every client, one contributor list proposed to every
  client, and every decryption request naming that list: an aggregator that
  told clients different things equivocated, whether or not they refused;
- a request to decrypt goes only to one of the list's first `decryptors`, names
  signers on the list, each of whom sent a SignContributors message in the
  round, and at least a majority of the round's participants;
- decryptions come back only from clients asked for one, at most `decryptors`.

The same rules hold for a round left open (no close statement, `view.statement`
None): the participants are then those seen in the round's records, a lower
bound, so the majority check can only be weaker there, never wrong.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from protocols.ckks.messages import (
    DeliverSeed,
    ProposeContributors,
    RequestDecryption,
    ReturnDecryption,
)
from protocols.ckks.signed import majority
from protocols.messages import Message

Problems = list[tuple[int, str]]
_CLIENT_STAGES = {"AdvertiseKey", "ShareSeed", "SubmitCiphertext", "SignContributors",
                  "ReturnDecryption"}

_META_KEYS = {
    "DeliverSeed": {"keyholder"},
    "ProposeContributors": {"keyholder", "contributors"},
    "RequestDecryption": {"contributors", "decrypt", "signers"},
    "ReturnDecryption": {"released"},
}


def transcript_meta(message: Message) -> dict[str, Any] | None:
    """The public facts of a message the audit needs, recorded and signed with it."""
    if isinstance(message, DeliverSeed):
        return {"keyholder": message.keyholder}
    if isinstance(message, ProposeContributors):
        return {"keyholder": message.keyholder, "contributors": list(message.contributors)}
    if isinstance(message, RequestDecryption):
        return {"contributors": list(message.contributors), "decrypt": message.decrypt,
                "signers": list(message.signers)}
    if isinstance(message, ReturnDecryption):
        return {"released": bool(message.values.size)}
    return None


def _well_formed(rec: Any) -> bool:
    keys = _META_KEYS.get(rec.stage)
    if keys is None:
        return rec.meta is None
    meta = rec.meta
    if not isinstance(meta, dict) or set(meta) != keys:
        return False
    lists = [meta[k] for k in ("contributors", "signers") if k in meta]
    flags = [meta[k] for k in ("decrypt", "released") if k in meta]
    return (
        all(isinstance(v, list) and all(isinstance(x, str) for x in v) for v in lists)
        and all(isinstance(f, bool) for f in flags)
        and isinstance(meta.get("keyholder", ""), str)
    )


def _one(problems: Problems, recs: Sequence[Any], key: str, what: str) -> Any:
    """The value of meta[key] every record agrees on (the first's; a differing one is
    reported as equivocation)."""
    if not recs:
        return None
    first = recs[0].meta[key]
    for rec in recs[1:]:
        if rec.meta[key] != first:
            problems.append((rec.line, f"{what} sent to {rec.receiver} differs from the one "
                                       f"sent to {recs[0].receiver}: the aggregator equivocated"))
    return first


def audit_round(*, decryptors: int, view: Any) -> Problems:
    problems: Problems = []
    by_stage: dict[str, list[Any]] = defaultdict(list)
    for rec in view.records:
        if not _well_formed(rec):
            return [(rec.line, f"malformed ckks meta for stage {rec.stage}")]
        by_stage[rec.stage].append(rec)
    st = view.statement  # None: a round left open
    if st is not None:
        participants = {*st["survivors"], *(d[0] for d in st["dropped"])}
    else:
        participants = {r.sender if r.stage in _CLIENT_STAGES else r.receiver
                        for r in view.records}
    _one(problems, by_stage["DeliverSeed"], "keyholder", "the keyholder")
    _one(problems, by_stage["ProposeContributors"], "keyholder", "the keyholder of the list")
    listed = _one(problems, by_stage["ProposeContributors"], "contributors",
                  "the contributor list")
    requests = by_stage["RequestDecryption"]
    for rec in requests:
        if listed is not None and rec.meta["contributors"] != listed:
            problems.append((rec.line, f"the decryption request to {rec.receiver} names another "
                                       "contributor list than the one proposed"))
    signed_by = {r.sender for r in by_stage["SignContributors"]}
    asked = set()
    for rec in (r for r in requests if r.meta["decrypt"]):
        asked.add(rec.receiver)
        ids, signers = rec.meta["contributors"], rec.meta["signers"]
        if rec.receiver not in ids[:decryptors]:
            problems.append((rec.line, f"{rec.receiver} was asked to decrypt but is not among "
                                       f"the list's first {decryptors}"))
        if not set(signers) <= set(ids) or not set(signers) <= signed_by:
            problems.append((rec.line, "the request names signers who are not on the list or "
                                       "sent no signature in the round"))
        if len(set(signers)) < majority(len(participants)):
            problems.append((rec.line, f"the request to {rec.receiver} names {len(signers)} "
                                       f"signers, fewer than a majority of the "
                                       f"{len(participants)} participants"))
    released = [r for r in by_stage["ReturnDecryption"] if r.meta["released"]]
    for rec in released:
        if rec.sender not in asked:
            problems.append((rec.line, f"{rec.sender} released a decryption it was not asked "
                                       "for"))
    if len(released) > decryptors:
        problems.append((released[-1].line, f"{len(released)} decryptions of one round, more "
                                             f"than decryptors = {decryptors}"))
    return problems
