"""Key derivation, share sealing and signed statements of secagg.

Every HKDF info and every AES-GCM associated data is the canonical JSON of
(protocol version, purpose, round, stage, parties), so a key or ciphertext from
one round, stage or pair of clients is useless in any other. Keys are fresh
each round and derived from a client's 32-byte round seed (injected
randomness), never written anywhere.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

import numpy as np

from protocols.hazmat.aead import NONCE_BYTES, TAG_BYTES, open_sealed, seal
from protocols.hazmat.kdf import hkdf_sha256
from protocols.hazmat.kex import AgreementKey
from protocols.hazmat.prg import add_mask, prg_bytes, prg_stream
from protocols.hazmat.shamir import SHARE_BYTES, decode_share, encode_share
from protocols.hazmat.signing import SIGNATURE_BYTES, SigningKey, verify_signature
from protocols.messages import canonical_json
from protocols.roster import Roster

VERSION = "securediff/secagg/v1"
KEY_BYTES = 32  # X25519 and Ed25519 public keys
SEALED_BYTES = NONCE_BYTES + 2 * SHARE_BYTES + TAG_BYTES
SELF_MASK = b"self-mask"
PAIR_MASK = b"pairwise-mask"


def context(purpose: str, *, round_index: int, stage: str, parties: Sequence[str]) -> bytes:
    """The key-derivation context: the canonical JSON of its fields."""
    parties = list(parties)
    # A round derives ~4 n k contexts. When every string is a party id or a plain
    # name (nothing JSON would escape), the canonical bytes are written directly:
    # the same bytes as canonical_json (tests/protocols/test_id_lists_and_contexts.py).
    if (type(round_index) is int and _PLAIN.fullmatch(purpose) and _PLAIN.fullmatch(stage)
            and _plain_strings(parties)):
        listed = '","'.join(parties)
        return (f'{{"parties":["{listed}"],"proto":"{VERSION}","purpose":"{purpose}",'
                f'"round":{round_index},"stage":"{stage}"}}').encode("ascii")
    return canonical_json({"proto": VERSION, "purpose": purpose, "round": round_index,
                           "stage": stage, "parties": parties})


_PLAIN = re.compile(r"[A-Za-z0-9._:@+-]+")  # characters canonical JSON writes as they are


def _plain_strings(items: list[str]) -> bool:
    """Non-empty, and every item a non-empty string of `_PLAIN` characters."""
    return bool(items) and all(type(i) is str and _PLAIN.fullmatch(i) is not None for i in items)


def derive(seed: bytes, label: str, n: int = 32) -> bytes:
    """Bytes for one purpose from a client's round seed (independent PRG streams)."""
    return prg_bytes(seed, n, nonce=label.encode())


def stream(seed: bytes, label: str) -> Callable[[int], bytes]:
    """A sequential byte stream for one purpose (successive calls continue it)."""
    return prg_stream(seed, nonce=label.encode())


def agreement_key(raw: bytes) -> AgreementKey:
    return AgreementKey.from_private_bytes(raw)


def ephemeral_signer(raw: bytes) -> SigningKey:
    return SigningKey.from_private_bytes(raw)


def pairwise_seed(key: AgreementKey, peer_pk: bytes, *, round_index: int, a: str, b: str) -> bytes:
    """The mask seed of the pair {a, b}: the same at both ends and for the aggregator
    once it rebuilt either end's private key."""
    info = context("pairwise-mask", round_index=round_index, stage="MaskedInput",
                   parties=sorted((a, b)))
    return key.derive(peer_pk, info=info)


def share_keys_with(key: AgreementKey, peer_pk: bytes, *, round_index: int, me: str,
                    other: str) -> tuple[bytes, bytes]:
    """The keys of the share boxes `me` -> `other` and `other` -> `me`: one X25519
    agreement, one HKDF per direction (each bound to its sender and receiver)."""
    secret = key.exchange(peer_pk)
    return tuple(
        hkdf_sha256(secret, info=context("share-encryption", round_index=round_index,
                                         stage="ShareKeys", parties=[a, b]))
        for a, b in ((me, other), (other, me)))


def share_ad(*, round_index: int, sender: str, receiver: str) -> bytes:
    return context("sealed-shares", round_index=round_index, stage="ShareKeys",
                   parties=[sender, receiver])


def seal_shares(key: bytes, b_share: int, sk_share: int, *, nonce: bytes, ad: bytes) -> bytes:
    """AES-256-GCM over both shares; the key is used for this one message only."""
    plaintext = encode_share(b_share) + encode_share(sk_share)
    return seal(key, plaintext, associated_data=ad, nonce=nonce)


def open_shares(key: bytes, sealed: bytes, *, ad: bytes) -> tuple[int, int]:
    plaintext = open_sealed(key, sealed, associated_data=ad)
    return decode_share(plaintext[:SHARE_BYTES]), decode_share(plaintext[SHARE_BYTES:])


def advertise_statement(*, round_index: int, client_id: str, c_pk: bytes, s_pk: bytes,
                        e_pk: bytes, params: str) -> bytes:
    """What a client signs with its roster key: its round keys, bound to the round and
    to the round's protocol parameters (`params`: RoundContext.params_digest), so an
    advert cannot be replayed into a round run with other parameters."""
    body = {"round": round_index, "client": client_id, "c_pk": c_pk.hex(), "s_pk": s_pk.hex(),
            "e_pk": e_pk.hex(), "params": params}
    return context("advertise", round_index=round_index, stage="AdvertiseKeys",
                   parties=[client_id]) + b"\n" + canonical_json(body)


def missing_statement(*, round_index: int, client_id: str, missing: Sequence[str]) -> bytes:
    """What a client signs with its masked input: the neighbours it did not mask with."""
    return context("mask-partners", round_index=round_index, stage="MaskedInput",
                   parties=[client_id]) + b"\n" + canonical_json({"missing": list(missing)})


def consistency_statement(*, round_index: int, masked_senders: Sequence[str],
                          commitment: bytes) -> bytes:
    """What a client signs to accept a survivor list: the list and the commitment to the
    key list it was routed (`merkle.list_commitment`), so that signatures over lists
    routed differently never count together."""
    return context("consistency", round_index=round_index, stage="ConsistencySign",
                   parties=list(masked_senders)) + b"\n" + commitment


# Signature checks are memoized. The functions are pure (the answer depends only
# on the argument bytes, compared in full), so a remembered answer is exactly
# what checking again would give. In the in-process simulation the n (k + 1)
# advert checks of a round become n (docs/performance.md); a deployed client, in
# its own process, still checks each of its k + 1 routed adverts itself.
def first_unsigned_advert(
    roster: Roster, round_index: int, ids: tuple[str, ...], c_pks: bytes, s_pks: bytes,
    e_pks: bytes, id_sigs: bytes, params: str,
) -> str | None:
    """The first client whose routed keys (concatenated, in `ids` order) are not signed
    by its roster key, else None. The caller checked the sizes."""
    cs, ss, es = (chunks(b, KEY_BYTES) for b in (c_pks, s_pks, e_pks))
    sigs = chunks(id_sigs, SIGNATURE_BYTES)
    for i, cid in enumerate(ids):
        if not advert_signed(roster.public_key(cid), round_index, cid, cs[i], ss[i], es[i], sigs[i],
                             params):
            return cid
    return None


# Each client checks the adverts of its neighbours, so in the in-process simulation
# every advert is asked about k + 1 times; the answer is remembered per advert (the
# cache holds the adverts of rounds of a few thousand clients).
# Keyed on the signer's key, not the roster: a roster holds n keys and hashing it
# for each of the n (k + 1) lookups made the memo itself cost O(n^2 k).
@functools.lru_cache(maxsize=1 << 14)
def advert_signed(public_key: bytes, round_index: int, cid: str, c_pk: bytes, s_pk: bytes,
                  e_pk: bytes, sig: bytes, params: str) -> bool:
    statement = advertise_statement(round_index=round_index, client_id=cid, c_pk=c_pk,
                                    s_pk=s_pk, e_pk=e_pk, params=params)
    return verify_signature(public_key=public_key, message=statement, signature=sig)


@functools.lru_cache(maxsize=8)
def routed_keys(
    ids: tuple[str, ...], c_pks: bytes, s_pks: bytes, e_pks: bytes
) -> Mapping[str, tuple[bytes, bytes, bytes]] | None:
    """Each routed client's (c, s, e) public keys from the concatenated lists, read-only;
    None when two of the routed keys are equal. Pure and memoized."""
    cs, ss, es = (chunks(b, KEY_BYTES) for b in (c_pks, s_pks, e_pks))
    if len(set(cs) | set(ss) | set(es)) != 3 * len(ids):
        return None
    return MappingProxyType(dict(zip(ids, zip(cs, ss, es, strict=True), strict=True)))


@functools.lru_cache(maxsize=8)
def first_bad_consistency_sig(
    round_index: int, signed_list: tuple[str, ...], commitment: bytes,
    signers: tuple[str, ...], pks: tuple[bytes, ...], signatures: tuple[bytes, ...],
) -> str | None:
    """The first signer whose signature of the survivor list is invalid, else None."""
    statement = consistency_statement(round_index=round_index, masked_senders=signed_list,
                                      commitment=commitment)
    for cid, pk, sig in zip(signers, pks, signatures, strict=True):
        if not verify_signature(public_key=pk, message=statement, signature=sig):
            return cid
    return None


@functools.lru_cache(maxsize=8)
def first_bad_attestation(
    round_index: int, members: tuple[str, ...], pks: tuple[bytes, ...],
    missing: tuple[tuple[str, ...], ...], signatures: tuple[bytes, ...],
) -> str | None:
    """The first member whose mask-partner attestation is not signed by its round
    signing key (`pks`: the roster keys in a bound round, else the routed e keys)."""
    for cid, pk, gaps, sig in zip(members, pks, missing, signatures, strict=True):
        statement = missing_statement(round_index=round_index, client_id=cid, missing=gaps)
        if not verify_signature(public_key=pk, message=statement, signature=sig):
            return cid
    return None


def join_ids(ids: Sequence[str]) -> str:
    """A list of party ids as one wire string (ids never contain a comma)."""
    return ",".join(ids)


def split_ids(joined: str) -> tuple[str, ...]:
    return tuple(joined.split(",")) if joined else ()


def add_self_mask(acc: np.ndarray, b_seed: bytes, *, bits: int, subtract: bool = False) -> None:
    add_mask(acc, b_seed, bits=bits, nonce=SELF_MASK, subtract=subtract)


def add_pair_mask(acc: np.ndarray, seed: bytes, *, bits: int, subtract: bool) -> None:
    add_mask(acc, seed, bits=bits, nonce=PAIR_MASK, subtract=subtract)


def pair_sign_adds(me: str, peer: str) -> bool:
    """The lower id adds the pairwise mask, the higher subtracts it."""
    return me < peer


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]
