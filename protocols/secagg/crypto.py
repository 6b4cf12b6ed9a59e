"""Key derivation, share sealing and signed statements of secagg.

Every HKDF info and every AES-GCM associated data is the canonical JSON of
(protocol version, purpose, round, stage, parties), so a key or ciphertext from
one round, stage or pair of clients is useless in any other. Keys are fresh
each round and derived from a client's 32-byte round seed (injected
randomness), never written anywhere.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from protocols.hazmat.aead import NONCE_BYTES, TAG_BYTES, open_sealed
from protocols.hazmat.kex import AgreementKey
from protocols.hazmat.prg import add_mask, prg_bytes, prg_stream
from protocols.hazmat.shamir import SHARE_BYTES, decode_share, encode_share
from protocols.hazmat.signing import SigningKey
from protocols.messages import canonical_json

VERSION = "securediff/secagg/v1"
SEALED_BYTES = NONCE_BYTES + 2 * SHARE_BYTES + TAG_BYTES
SELF_MASK = b"self-mask"
PAIR_MASK = b"pairwise-mask"


def context(purpose: str, *, round_index: int, stage: str, parties: Sequence[str]) -> bytes:
    return canonical_json(
        {
            "proto": VERSION,
            "purpose": purpose,
            "round": round_index,
            "stage": stage,
            "parties": list(parties),
        }
    )


def derive(seed: bytes, label: str, n: int = 32) -> bytes:
    """Bytes for one purpose from a client's round seed (independent PRG streams)."""
    return prg_bytes(seed, n, nonce=label.encode())


def stream(seed: bytes, label: str) -> Callable[[int], bytes]:
    """A sequential byte stream for one purpose (successive calls continue it)."""
    return prg_stream(seed, nonce=label.encode())


def agreement_key(raw: bytes) -> AgreementKey:
    return AgreementKey(X25519PrivateKey.from_private_bytes(raw))


def ephemeral_signer(raw: bytes) -> SigningKey:
    return SigningKey(Ed25519PrivateKey.from_private_bytes(raw))


def pairwise_seed(key: AgreementKey, peer_pk: bytes, *, round_index: int, a: str, b: str) -> bytes:
    """The mask seed of the pair {a, b}: the same at both ends and for the aggregator
    once it rebuilt either end's private key."""
    info = context("pairwise-mask", round_index=round_index, stage="MaskedInput",
                   parties=sorted((a, b)))
    return key.derive(peer_pk, info=info)


def share_key(key: AgreementKey, peer_pk: bytes, *, round_index: int, sender: str,
              receiver: str) -> bytes:
    info = context("share-encryption", round_index=round_index, stage="ShareKeys",
                   parties=[sender, receiver])
    return key.derive(peer_pk, info=info)


def share_ad(*, round_index: int, sender: str, receiver: str) -> bytes:
    return context("sealed-shares", round_index=round_index, stage="ShareKeys",
                   parties=[sender, receiver])


def seal_shares(key: bytes, b_share: int, sk_share: int, *, nonce: bytes, ad: bytes) -> bytes:
    """AES-256-GCM over both shares; the key is used for this one message only."""
    plaintext = encode_share(b_share) + encode_share(sk_share)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, ad)


def open_shares(key: bytes, sealed: bytes, *, ad: bytes) -> tuple[int, int]:
    plaintext = open_sealed(key, sealed, associated_data=ad)
    return decode_share(plaintext[:SHARE_BYTES]), decode_share(plaintext[SHARE_BYTES:])


def advertise_statement(*, round_index: int, client_id: str, c_pk: bytes, s_pk: bytes,
                        e_pk: bytes) -> bytes:
    body = {"round": round_index, "client": client_id, "c_pk": c_pk.hex(), "s_pk": s_pk.hex(),
            "e_pk": e_pk.hex()}
    return context("advertise", round_index=round_index, stage="AdvertiseKeys",
                   parties=[client_id]) + b"\n" + canonical_json(body)


def consistency_statement(*, round_index: int, masked_senders: Sequence[str]) -> bytes:
    return context("consistency", round_index=round_index, stage="ConsistencySign",
                   parties=list(masked_senders))


def add_self_mask(acc: np.ndarray, b_seed: bytes, *, bits: int, subtract: bool = False) -> None:
    add_mask(acc, b_seed, bits=bits, nonce=SELF_MASK, subtract=subtract)


def add_pair_mask(acc: np.ndarray, seed: bytes, *, bits: int, subtract: bool) -> None:
    add_mask(acc, seed, bits=bits, nonce=PAIR_MASK, subtract=subtract)


def pair_sign_adds(me: str, peer: str) -> bool:
    """The lower id adds the pairwise mask, the higher subtracts it."""
    return me < peer


def chunks(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]
