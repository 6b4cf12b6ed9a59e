"""The messages of a secagg round, one type per stage (wire codes 0x03xx).

Lists of parties are sorted id tuples; per-party byte strings of fixed size
(keys, signatures, sealed shares) are concatenated in the order of the list
they belong to, so every message has one canonical encoding. Id lists, keys,
signatures and shares travel as compact binary in the payload (`PartyIds`,
`Binary`), not as hex or JSON in the header.
"""

from __future__ import annotations

import numpy as np

from protocols.messages import Binary, Message, PartyIds, message_type

KEY_BYTES = 32
SIG_BYTES = 64


@message_type(code=0x0301, name="secagg.AdvertiseKeys", stage="AdvertiseKeys")
class AdvertiseKeys(Message):
    """Fresh X25519 keys (c: share encryption, s: pairwise masks), a fresh Ed25519
    key e for the consistency round, and (with a roster) the identity signature."""

    c_pk: Binary
    s_pk: Binary
    e_pk: Binary
    id_sig: Binary


@message_type(code=0x0302, name="secagg.RouteKeys", stage="RouteKeys")
class RouteKeys(Message):
    """The round's public shape (graph degree, threshold, vector length and dtype), the
    sorted id list of every advertising client (U1), the Merkle root over their keys
    (merkle.py), and the keys of `routed` only, in its order, with their roster
    signatures and, unless `routed` is the whole list, one inclusion proof each (the
    audit paths concatenated, each as long as `merkle.proof_length` says). A bound
    round routes each client itself and its graph neighbours; an unbound one routes
    everyone (the client then recomputes the root itself)."""

    degree: int
    threshold: int
    length: int
    dtype: str
    ids: PartyIds
    root: Binary
    routed: PartyIds
    c_pks: Binary
    s_pks: Binary
    e_pks: Binary
    id_sigs: Binary
    proofs: Binary


@message_type(code=0x0303, name="secagg.ShareKeys", stage="ShareKeys")
class ShareKeys(Message):
    """Sealed shares of b and sk for each neighbour (fixed-size ciphertexts)."""

    receivers: PartyIds
    sealed: Binary


@message_type(code=0x0304, name="secagg.ForwardShares", stage="ForwardShares")
class ForwardShares(Message):
    senders: PartyIds
    sealed: Binary


@message_type(code=0x0305, name="secagg.MaskedInput", stage="MaskedInput")
class MaskedInput(Message):
    """The masked encoding; empty from a client the aggregator stopped talking to.
    `missing` lists the graph neighbours the client did NOT mask with (no shares of
    theirs were forwarded to it), signed (`missing_sig`) with its roster key in a bound
    round, else with its round key e: the attestation every client checks for each
    member of the survivor list."""

    masked: np.ndarray
    missing: PartyIds
    missing_sig: Binary


@message_type(code=0x0306, name="secagg.ConsistencyRequest", stage="ConsistencyRequest")
class ConsistencyRequest(Message):
    """U3: the clients whose masked input the aggregator holds."""

    masked_senders: PartyIds


@message_type(code=0x0307, name="secagg.ConsistencySign", stage="ConsistencySign")
class ConsistencySign(Message):
    """The survivor list and the key-list commitment, signed with the client's roster
    key in a bound round (its round key e otherwise)."""

    signature: Binary


@message_type(code=0x0308, name="secagg.UnmaskRequest", stage="UnmaskRequest")
class UnmaskRequest(Message):
    """The survivor list L (`included`: every client whose masked input the aggregator
    holds; their b is rebuilt) and the dropped clients of U2 (their sk is). With the
    consistency round, `signed_list` repeats L and `signers` (a quorum of clients on
    L) carry their signatures of it, in that order; all three are empty without it."""

    included: PartyIds
    dropped: PartyIds
    signed_list: PartyIds
    signers: PartyIds
    signatures: Binary
    # Per member of L, in order: its signed attestation from MaskedInput (the
    # neighbours it did not mask with, comma-joined, and the signature).
    missing: tuple[str, ...]
    missing_sigs: Binary


@message_type(code=0x0309, name="secagg.Unmask", stage="Unmask")
class Unmask(Message):
    """Shares revealed by one client: b shares of included owners, sk shares of dropped ones."""

    b_owners: PartyIds
    b_shares: Binary
    sk_owners: PartyIds
    sk_shares: Binary


@message_type(code=0x030A, name="secagg.Release", stage="Release")
class Release(Message):
    """The unmasked ring sum of the included clients' encodings."""

    included: PartyIds
    total: np.ndarray
