"""Handing the CKKS key seed from the keyholder to every other client.

Each client advertises a fresh X25519 key for the round; the aggregator relays
them. A seed travels sealed with AES-256-GCM under HKDF-SHA256 of the pairwise
X25519 secret, with the protocol, round, both parties and both public keys in
the HKDF info and the associated data, so a sealed seed opens for its one
recipient in its one round. The aggregator relays ciphertexts it cannot open.

Each relayed public key is signed with its owner's roster identity key
(`protocols.ckks.signed`), and a client refuses a directory entry that is not:
an aggregator that put its own key in the directory would otherwise open the
seed sealed "to" that client and decrypt every ciphertext of the round.
"""

from __future__ import annotations

from collections.abc import Callable

from protocols.errors import ProtocolAbort
from protocols.hazmat.aead import NONCE_BYTES, AeadError, open_sealed, seal
from protocols.hazmat.kex import AgreementKey
from protocols.messages import canonical_json

_DOMAIN = b"securediff/ckks/key-seed/v1"


def agreement_key(random_bytes: Callable[[int], bytes]) -> AgreementKey:
    """An X25519 key from 32 bytes of the injected source (clamped by X25519 itself)."""
    return AgreementKey.from_private_bytes(random_bytes(32))


def _context(*, round_index: int, sender: str, receiver: str, sender_key: bytes,
             receiver_key: bytes, params_digest: str) -> bytes:
    return _DOMAIN + canonical_json(
        {
            "round": round_index,
            "sender": sender,
            "receiver": receiver,
            "sender_key": sender_key.hex(),
            "receiver_key": receiver_key.hex(),
            "params": params_digest,
        }
    )


def seal_seed(
    *,
    own: AgreementKey,
    peer_public_key: bytes,
    seed: bytes,
    round_index: int,
    sender: str,
    receiver: str,
    params_digest: str,
    random_bytes: Callable[[int], bytes],
) -> bytes:
    ctx = _context(round_index=round_index, sender=sender, receiver=receiver,
                   sender_key=own.public_key, receiver_key=peer_public_key,
                   params_digest=params_digest)
    key = own.derive(peer_public_key, info=ctx)
    return seal(key, seed, associated_data=ctx, nonce=random_bytes(NONCE_BYTES))


def open_seed(
    *,
    own: AgreementKey,
    sender_public_key: bytes,
    sealed: bytes,
    round_index: int,
    sender: str,
    receiver: str,
    params_digest: str,
) -> bytes:
    ctx = _context(round_index=round_index, sender=sender, receiver=receiver,
                   sender_key=sender_public_key, receiver_key=own.public_key,
                   params_digest=params_digest)
    try:
        return open_sealed(own.derive(sender_public_key, info=ctx), sealed, associated_data=ctx)
    except (AeadError, ValueError) as exc:
        raise ProtocolAbort(
            f"{receiver}: the key seed from {sender} does not open ({exc})") from None
