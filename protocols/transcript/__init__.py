"""Signed, chained transcripts of protocol runs, and their verification.

`transcript.jsonl` holds one canonical JSON record per line:

- `header`: starts a session (a run, or a resume of it): format version,
  protocol and its parameters, the digest of the roster whose keys sign it,
  and the rounds the session plans to close (or null).
- `message`: one protocol message: round, stage, type, sender, receiver,
  SHA-256 and size of its canonical bytes, and `meta`: the public facts of the
  message a protocol's audit needs (`protocol.transcript_meta`, e.g. which
  shares a secagg client revealed), or null.
- `round_close`: ends a round. Its `statement` (outcome, survivors, dropped,
  digest of the round's record list, aggregate digest) is co-signed by every
  survivor; `records` lists the round's record digests in file order.

Every record and every co-signature carries the signer's sequence number
(per party, gapless across the whole file, sessions included) and the digest
of that party's previous signed item, and is signed with the party's Ed25519
key. The aggregator writes the file, so it could rewrite its own chain; what
it cannot forge are the survivors' co-signatures, which pin each round's
records and outcome and sit in the clients' own chains.

On request the writer also stores every payload beside the transcript, in
`<transcript>.payloads/<sha256>`; `verify_transcript` then checks each stored
payload against its record and lets the protocol replay the round
(`protocol.audit_round`: for secagg, that the released aggregate is the
unmasked sum). Without payloads the protocol audits the signed metas alone.

A round holds release evidence once it has a message in one of the protocol's
`evidence_stages` (the messages that let the aggregator compute a sum). The
verifier audits every such round, closed or left open (an aggregator that never
closes a round must not escape its audit), and fails a round index that holds
evidence twice: a second sum at one index could be differenced with the first.

The package: `format` (record shapes, domains, digests), `writer` (the file and
every party's chain), `verify` (replay against pinned rosters) and `report`
(what it returns, and the round view a protocol audits), `summary` (the
per-round traffic `securediff transcript show` prints). Import from here.
"""

from protocols.transcript.format import (
    CLOSE_STAGE,
    COSIG_DOMAIN,
    LIST_DOMAIN,
    RECORD_DOMAIN,
    TRANSCRIPT_VERSION,
    UNCHECKABLE,
    cosig_digest,
    message_meta,
    payload_dir,
    records_digest,
    statement_digest,
)
from protocols.transcript.report import RoundRecord, RoundView, TranscriptProblem, TranscriptReport
from protocols.transcript.summary import PartyRound, RoundSummary, summarize_transcript
from protocols.transcript.verify import verify_transcript
from protocols.transcript.writer import (
    TranscriptWriter,
    cosign_statement,
    last_round_index,
    store_payload,
)

__all__ = [
    "CLOSE_STAGE",
    "COSIG_DOMAIN",
    "LIST_DOMAIN",
    "RECORD_DOMAIN",
    "TRANSCRIPT_VERSION",
    "UNCHECKABLE",
    "PartyRound",
    "RoundRecord",
    "RoundSummary",
    "RoundView",
    "TranscriptProblem",
    "TranscriptReport",
    "TranscriptWriter",
    "cosig_digest",
    "cosign_statement",
    "last_round_index",
    "message_meta",
    "payload_dir",
    "records_digest",
    "statement_digest",
    "store_payload",
    "summarize_transcript",
    "verify_transcript",
]
