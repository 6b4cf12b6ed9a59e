"""The aggregator's steps of a ckks round, as pure functions over `ServerState`.

An honest aggregator checks what the clients will check (signatures under the
roster, loadable ciphertexts) so that one bad message drops its sender instead
of making every client refuse the round. It never adds ciphertexts up itself:
each decryptor computes the sum from the listed ciphertexts.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from protocols.ckks import signed
from protocols.ckks.context import KEY_SEED_BYTES, CiphertextError, CkksContext
from protocols.ckks.messages import (
    AdvertiseKey,
    BroadcastAggregate,
    DeliverSeed,
    KeyDirectory,
    ProposeContributors,
    RequestDecryption,
    ReturnDecryption,
    ShareSeed,
    SignContributors,
    SubmitCiphertext,
    pack,
    unpack,
)
from protocols.ckks.rules import Rules
from protocols.hazmat.aead import NONCE_BYTES, TAG_BYTES
from protocols.hazmat.kex import PUBLIC_KEY_BYTES
from protocols.hazmat.signing import verify_signature
from protocols.messages import MAX_MESSAGE_BYTES, Message
from protocols.stages import Aggregate, RandomBytes, ServerState

SEALED_SEED_BYTES = NONCE_BYTES + KEY_SEED_BYTES + TAG_BYTES
Bodies = dict[str, tuple[type[Message], dict[str, Any]]]


@dataclass(frozen=True)
class Submission:
    client: str
    weight: float
    blobs: tuple[bytes, ...]
    signature: bytes
    digest: bytes


@dataclass(frozen=True)
class ServerData:
    random_bytes: RandomBytes
    keys: tuple[tuple[str, bytes, bytes], ...] = ()  # (client, X25519 key, signature)
    directory: tuple[tuple[str, bytes, bytes], ...] = ()
    shares: tuple[tuple[str, tuple[str, ...], bytes], ...] = ()
    keyholder: str | None = None
    submitted: tuple[Submission, ...] = ()
    contributors: tuple[str, ...] = ()
    decryptors: tuple[str, ...] = ()
    list_signatures: tuple[tuple[str, bytes], ...] = ()
    decryptions: tuple[tuple[str, np.ndarray], ...] = ()
    aggregate: Aggregate | None = None
    ciphertext_bytes: int = 0


def _data(state: ServerState, **changes: Any) -> ServerState:
    return dataclasses.replace(state, data=dataclasses.replace(state.data, **changes))


def _signed_by(rules: Rules, party: str, statement: bytes, signature: bytes) -> bool:
    roster = rules.roster
    if roster is None:
        return True
    return verify_signature(public_key=roster.public_key(party), message=statement,
                            signature=signature)


# -- client stages -----------------------------------------------------------------------
def receive_keys(rules: Rules, state: ServerState, messages) -> tuple[ServerState, dict]:
    keys, bad = [], {}
    for m in messages:
        ok = isinstance(m, AdvertiseKey) and len(m.public_key) == PUBLIC_KEY_BYTES
        if ok and _signed_by(rules, m.sender, signed.advert_statement(
                round_index=state.setup.round_index, params_digest=rules.digest_for(state.setup),
                client_id=m.sender, public_key=m.public_key), m.signature):
            keys.append((m.sender, m.public_key, m.signature))
        else:
            bad[m.sender] = "malformed or unsigned X25519 key"
    return _data(state, keys=tuple(keys)), bad


def receive_shares(rules: Rules, state: ServerState, messages) -> tuple[ServerState, dict]:
    directory = [c for c, _, _ in state.data.directory]
    shares, bad = [], {}
    for m in messages:
        expected = tuple(c for c in directory if c != m.sender)
        if (
            isinstance(m, ShareSeed)
            and m.recipients == expected
            and len(m.sealed) == SEALED_SEED_BYTES * len(expected)
        ):
            shares.append((m.sender, m.recipients, m.sealed))
        else:
            bad[m.sender] = "malformed key-seed share"
    return _data(state, shares=tuple(shares)), bad


def receive_ciphertexts(rules: Rules, public: CkksContext, state: ServerState,
                        messages) -> tuple[ServerState, dict]:
    d: ServerData = state.data
    chunks = rules.ckks.chunks(state.setup.vector.length)
    submitted, bad, nbytes = [], {}, d.ciphertext_bytes
    for m in messages:  # sorted by sender: the list's order
        blobs = unpack(m.sizes, m.data) if isinstance(m, SubmitCiphertext) else None
        if blobs is None or len(blobs) != chunks:
            bad[m.sender] = f"expected {chunks} ciphertext(s)"
            continue
        try:
            public.load(blobs)
        except CiphertextError as exc:
            bad[m.sender] = str(exc)
            continue
        digest = signed.ciphertext_digest(blobs)
        statement = signed.ciphertext_statement(
            round_index=state.setup.round_index, params_digest=rules.digest_for(state.setup),
            client_id=m.sender, keyholder=d.keyholder or "", weight=m.weight, digest=digest)
        if not _signed_by(rules, m.sender, statement, m.signature):
            bad[m.sender] = "ciphertexts not signed by the sender's roster key"
            continue
        submitted.append(Submission(m.sender, m.weight, blobs, m.signature, digest))
        nbytes += int(m.data.shape[0])
    return _data(state, submitted=tuple(submitted), ciphertext_bytes=nbytes), bad


def receive_list_signatures(rules: Rules, state: ServerState,
                            messages) -> tuple[ServerState, dict]:
    d: ServerData = state.data
    statement = signed.list_statement(
        round_index=state.setup.round_index, params_digest=rules.digest_for(state.setup),
        keyholder=d.keyholder or "", contributors=d.contributors,
        digests=[s.digest for s in d.submitted if s.client in d.contributors])
    got, bad = [], {}
    for m in messages:
        if isinstance(m, SignContributors) and _signed_by(rules, m.sender, statement,
                                                          m.signature):
            got.append((m.sender, m.signature))
        else:
            bad[m.sender] = "did not sign the contributor list"
    state = _data(state, list_signatures=tuple(got))
    needed = signed.majority(len(state.setup.participants))
    if len(got) < needed:
        state = dataclasses.replace(state, aborted=(
            f"round {state.setup.round_index}: {len(got)} clients signed the contributor "
            f"list, fewer than a majority ({needed}) of the participants"))
    return state, bad


def receive_decryptions(rules: Rules, state: ServerState, messages) -> tuple[ServerState, dict]:
    d: ServerData = state.data
    length = state.setup.vector.length
    got, bad = [], {}
    for m in messages:
        if not isinstance(m, ReturnDecryption):
            bad[m.sender] = "not a decryption"
        elif m.sender in d.decryptors:
            if m.values.shape == (length,) and m.values.dtype == "<f8" \
                    and np.isfinite(m.values).all():
                got.append((m.sender, m.values))
            else:
                bad[m.sender] = "malformed decryption"
        elif m.values.shape != (0,):
            bad[m.sender] = "sent a decryption it was not asked for"
    if not got:
        return dataclasses.replace(state, aborted=(
            f"round {state.setup.round_index}: no decryptor returned the sum")), bad
    return _data(state, decryptions=tuple(got)), bad


# -- server stages -----------------------------------------------------------------------
def send_directory(rules: Rules, state: ServerState) -> tuple[ServerState, Bodies]:
    directory = tuple(k for k in state.data.keys if k[0] in state.active)
    fields = {"clients": tuple(c for c, _, _ in directory),
              "public_keys": b"".join(k for _, k, _ in directory),
              "signatures": b"".join(s for _, _, s in directory)}
    return _data(state, directory=directory), {c: (KeyDirectory, fields) for c, _, _ in directory}


def send_seeds(rules: Rules, state: ServerState) -> tuple[ServerState, Bodies]:
    shares = [s for s in state.data.shares if s[0] in state.active]
    if not shares:
        return dataclasses.replace(state, aborted="no client shared a key seed"), {}
    keyholder, recipients, sealed = shares[0]
    blobs = {
        r: sealed[i * SEALED_SEED_BYTES : (i + 1) * SEALED_SEED_BYTES]
        for i, r in enumerate(recipients)
    }
    bodies: Bodies = {
        c: (DeliverSeed, {"keyholder": keyholder, "sealed": b"" if c == keyholder else blobs[c]})
        for c in state.active
    }
    return _data(state, keyholder=keyholder), bodies


def send_proposal(rules: Rules, state: ServerState) -> tuple[ServerState, Bodies]:
    """Fix the ONE contributor list: from here on the sum holds every client on it."""
    d: ServerData = state.data
    listed = [s for s in d.submitted if s.client in state.active]
    if not listed:
        return dataclasses.replace(state, aborted="no ciphertext to aggregate"), {}
    contributors = tuple(s.client for s in listed)
    fields = {"keyholder": d.keyholder, "contributors": contributors,
              "digests": b"".join(s.digest for s in listed)}
    state = _data(state, contributors=contributors,
                  decryptors=contributors[: rules.ckks.decryptors])
    return state, {c: (ProposeContributors, fields) for c in state.active}


def send_requests(rules: Rules, state: ServerState) -> tuple[ServerState, Bodies]:
    d: ServerData = state.data
    decryptors = [c for c in d.decryptors if c in state.active]
    if not decryptors:
        return dataclasses.replace(state, aborted=(
            f"round {state.setup.round_index}: every decryptor left before decrypting")), {}
    listed = [s for s in d.submitted if s.client in d.contributors]
    blobs = [b for s in listed for b in s.blobs]
    if sum(map(len, blobs)) > MAX_MESSAGE_BYTES - (1 << 20):
        return dataclasses.replace(state, aborted=(
            "the listed ciphertexts exceed one message to a decryptor (1 GiB): fewer "
            "clients or a shorter vector per round")), {}
    sizes, data = pack(blobs)
    signers = tuple(c for c, _ in d.list_signatures)
    full = {
        "contributors": d.contributors, "decrypt": True, "signers": signers,
        "list_signatures": b"".join(s for _, s in d.list_signatures),
        "weights": np.array([s.weight for s in listed], dtype=np.float64),
        "ciphertext_signatures": b"".join(s.signature for s in listed),
        "sizes": sizes, "data": data,
    }
    empty_sizes, empty = pack([])
    brief = {**full, "decrypt": False, "signers": (), "list_signatures": b"",
             "weights": np.zeros(0, np.float64), "ciphertext_signatures": b"",
             "sizes": empty_sizes, "data": empty}
    bodies: Bodies = {
        c: (RequestDecryption, full if c in decryptors else brief) for c in state.active
    }
    return state, bodies


def send_aggregate(rules: Rules, state: ServerState) -> tuple[ServerState, Bodies]:
    d: ServerData = state.data
    values = np.mean(np.stack([v for _, v in d.decryptions]), axis=0)
    weights = [s.weight for s in d.submitted if s.client in d.contributors]
    if state.setup.vector.dtype == "int64" and all(float(w).is_integer() for w in weights):
        values = np.rint(values)  # exact: the error is far below 1/2 (see the docs)
    aggregate = Aggregate(weighted_sum=values.astype(np.float64), total_weight=math.fsum(weights))
    fields = {"total_weight": aggregate.total_weight, "contributors": d.contributors,
              "weighted_sum": aggregate.weighted_sum}
    return _data(state, aggregate=aggregate), {c: (BroadcastAggregate, fields)
                                               for c in state.active}
