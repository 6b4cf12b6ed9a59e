"""Statements the parties of a ckks round sign with their roster identity keys.

Three kinds, each a domain-separated canonical JSON object that names the round
and the digest of the protocol's parameters, so a signature from one round,
purpose or parameter set verifies in no other:

- `advert`: a client's X25519 key for the round (the aggregator cannot put its
  own key in the directory under a client's name);
- `ciphertext`: a contributor's ciphertexts (their digest), its public weight
  and the keyholder whose key encrypted them;
- `contributors`: the ONE list of contributors of the round, with each one's
  ciphertext digest and the keyholder. A client signs at most one such list per
  round, and only one that names it with the ciphertext it submitted; a
  decryptor decrypts only a list a majority of the round's participants signed.

The checks over whole relayed lists are pure functions of their arguments and
memoized, as secagg's are: every client of an in-process round receives the
same bytes, so n clients verify n signatures between them, not n^2 (a deployed
client, in its own process, still checks each signature itself).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

from protocols.hazmat.signing import SIGNATURE_BYTES, verify_signature
from protocols.messages import canonical_json
from protocols.roster import Roster

_DOMAIN = b"securediff/ckks/signed/v1\n"
DIGEST_BYTES = 32


def majority(participants: int) -> int:
    """The fewest signers of the contributor list: more than half the round's participants,
    so two different lists cannot both be signed unless some client signed both."""
    return participants // 2 + 1


def ciphertext_digest(blobs: Sequence[bytes]) -> bytes:
    """SHA-256 over a client's ciphertext blobs, each prefixed by its length."""
    h = hashlib.sha256(_DOMAIN + b"ciphertexts\n" + len(blobs).to_bytes(8, "little"))
    for blob in blobs:
        h.update(len(blob).to_bytes(8, "little"))
        h.update(blob)
    return h.digest()


def _statement(purpose: str, body: dict) -> bytes:
    return _DOMAIN + purpose.encode("ascii") + b"\n" + canonical_json(body)


def advert_statement(*, round_index: int, params_digest: str, client_id: str,
                     public_key: bytes) -> bytes:
    return _statement("advert", {"round": round_index, "params": params_digest,
                                 "client": client_id, "public_key": public_key.hex()})


def ciphertext_statement(*, round_index: int, params_digest: str, client_id: str,
                         keyholder: str, weight: float, digest: bytes) -> bytes:
    return _statement("ciphertext", {"round": round_index, "params": params_digest,
                                     "client": client_id, "keyholder": keyholder,
                                     "weight": float(weight), "ciphertexts": digest.hex()})


def list_statement(*, round_index: int, params_digest: str, keyholder: str,
                   contributors: Sequence[str], digests: Sequence[bytes]) -> bytes:
    return _statement("contributors", {"round": round_index, "params": params_digest,
                                       "keyholder": keyholder,
                                       "contributors": list(contributors),
                                       "ciphertexts": [d.hex() for d in digests]})


def split(data: bytes, size: int) -> tuple[bytes, ...]:
    return tuple(data[i : i + size] for i in range(0, len(data), size))


def _first_unsigned(roster: Roster, ids: Sequence[str], statements: Sequence[bytes],
                    signatures: bytes) -> str | None:
    # A missing signature is an invalid one; the callers refuse extra bytes first.
    sigs = split(signatures, SIGNATURE_BYTES) + (b"",) * len(ids)
    for cid, statement, sig in zip(ids, statements, sigs[: len(ids)], strict=True):
        if cid not in roster or not verify_signature(
            public_key=roster.public_key(cid), message=statement, signature=sig
        ):
            return cid
    return None


@functools.lru_cache(maxsize=8)
def first_unsigned_key(roster: Roster, round_index: int, params_digest: str,
                       ids: tuple[str, ...], public_keys: tuple[bytes, ...],
                       signatures: bytes) -> str | None:
    """The first client whose relayed X25519 key is not signed by its roster key, else None."""
    statements = [
        advert_statement(round_index=round_index, params_digest=params_digest, client_id=c,
                         public_key=k)
        for c, k in zip(ids, public_keys, strict=True)
    ]
    return _first_unsigned(roster, ids, statements, signatures)


@functools.lru_cache(maxsize=8)
def first_unsigned_ciphertext(roster: Roster, round_index: int, params_digest: str,
                              keyholder: str, ids: tuple[str, ...], weights: tuple[float, ...],
                              digests: tuple[bytes, ...], signatures: bytes) -> str | None:
    """The first contributor whose ciphertexts (by digest) and weight are not signed by
    its roster key for this round, parameters and keyholder, else None."""
    statements = [
        ciphertext_statement(round_index=round_index, params_digest=params_digest, client_id=c,
                             keyholder=keyholder, weight=w, digest=d)
        for c, w, d in zip(ids, weights, digests, strict=True)
    ]
    return _first_unsigned(roster, ids, statements, signatures)


@functools.lru_cache(maxsize=8)
def first_unsigned_list(roster: Roster, statement: bytes, signers: tuple[str, ...],
                        signatures: bytes) -> str | None:
    """The first signer whose signature of the contributor list is invalid, else None."""
    return _first_unsigned(roster, signers, [statement] * len(signers), signatures)
