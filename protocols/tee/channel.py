"""The client-to-enclave channel: X25519 with the attested enclave key, then
AES-256-GCM. HKDF info and associated data bind the round, the client, both
public keys and the enclave measurement, so an update opens only inside the
enclave that was attested to this client in this round."""

from __future__ import annotations

from collections.abc import Callable

from protocols.hazmat.aead import NONCE_BYTES, AeadError, open_sealed, seal
from protocols.hazmat.kex import AgreementKey
from protocols.messages import canonical_json

_DOMAIN = b"securediff/tee/channel/v1"


def agreement_key(random_bytes: Callable[[int], bytes]) -> AgreementKey:
    return AgreementKey.from_private_bytes(random_bytes(32))


def channel_context(*, round_index: int, client_id: str, client_key: bytes, enclave_key: bytes,
                    measurement: str) -> bytes:
    return _DOMAIN + canonical_json(
        {"round": round_index, "client": client_id, "client_key": client_key.hex(),
         "enclave_key": enclave_key.hex(), "measurement": measurement}
    )


def seal_to_enclave(*, own: AgreementKey, enclave_key: bytes, context: bytes, plaintext: bytes,
                    random_bytes: Callable[[int], bytes]) -> bytes:
    key = own.derive(enclave_key, info=context)
    return seal(key, plaintext, associated_data=context, nonce=random_bytes(NONCE_BYTES))


def open_in_enclave(*, own: AgreementKey, client_key: bytes, context: bytes, sealed: bytes) -> bytes:
    """Raises `AeadError` (or `ProtocolInputError` for a bad client key)."""
    return open_sealed(own.derive(client_key, info=context), sealed, associated_data=context)


__all__ = ["AeadError", "agreement_key", "channel_context", "open_in_enclave", "seal_to_enclave"]
