"""The aggregator code that runs inside the (SIMULATED) enclave.

The host keeps only the sealed blob this code returns; each step unseals it,
does its work and seals the result again, so the host's memory never holds the
enclave's X25519 key or a client's update in the clear. The enclave checks its
own release rule, which is part of the measured configuration: it releases the
weighted sum only, only over at least `min_survivors` contributions, and one sum
per round state: the enclave remembers, in its own memory, the contributors of
each state's release and refuses another set (the difference of two sums of one
state would be an update). A state holds updates of one round (the round index is
bound by every client's channel). Round state is sealed under a key bound to this
enclave instance as well as to the code and platform, so a restarted or second
instance cannot reopen an old state to release a second sum from it (rollback).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from protocols.errors import ProtocolAbort, ProtocolInputError
from protocols.hazmat.kdf import hkdf_sha384
from protocols.hazmat.kex import AgreementKey
from protocols.messages import canonical_json
from protocols.stages import RoundSetup
from protocols.tee.channel import AeadError, channel_context, open_in_enclave
from protocols.tee.quote import QUOTE_VERSION, SIGNER_ID, Evidence, Quote, QuoteBody, report_data
from protocols.tee.sealing import Sealer
from protocols.tee.vendor import SimulatedPlatform

RandomBytes = Callable[[int], bytes]
_LABEL = b"aggregator-state"
_LEN = struct.Struct("<Q")
_DTYPES = {"float32": "<f4", "float64": "<f8", "int64": "<i8"}


def transcript_head(setup: RoundSetup, challenge: bytes) -> bytes:
    """The round as one client has seen it so far: the public round set-up and the
    canonical bytes of its own challenge message."""
    public = {
        "protocol": setup.protocol, "round": setup.round_index, "aggregator": setup.aggregator_id,
        "participants": list(setup.participants), "length": setup.vector.length,
        "dtype": setup.vector.dtype, "threshold": setup.threshold,
    }
    return hashlib.sha256(
        b"securediff/tee/head/v1\n" + canonical_json(public) + b"\n"
        + hashlib.sha256(challenge).digest()
    ).digest()


def encode_update(*, weight: float, vector: np.ndarray) -> bytes:
    """The plaintext a client seals to the enclave."""
    head = canonical_json({"weight": weight, "dtype": vector.dtype.name, "length": int(vector.shape[0])})
    return _LEN.pack(len(head)) + head + np.ascontiguousarray(vector).astype(
        _DTYPES[vector.dtype.name], copy=False).tobytes()


@dataclass(frozen=True)
class Release:
    weighted_sum: np.ndarray
    total_weight: float
    contributors: tuple[str, ...]


class SimulatedEnclave:
    def __init__(self, *, platform: SimulatedPlatform, measurement: str, min_survivors: int,
                 svn: int = 1, debug: bool = False, random_bytes: RandomBytes = os.urandom) -> None:
        self.platform = platform
        self.measurement = measurement
        self.min_survivors = min_survivors
        self.svn = svn
        self.debug = debug
        # The code's sealing key, narrowed to this instance by a secret that never
        # leaves its memory: round state need not outlive the instance, and must not.
        self._sealer = Sealer(hkdf_sha384(platform.sealing_key(measurement), salt=random_bytes(32),
                                          info=b"securediff/tee/instance-state/v1"))
        self._released: dict[bytes, tuple[str, ...]] = {}  # SHA-256(state key) -> contributors

    # -- sealed state ----------------------------------------------------------
    def _seal(self, key: bytes, round_index: int | None,
              updates: dict[str, tuple[float, str, bytes]], random_bytes: RandomBytes) -> bytes:
        head = canonical_json({
            "key": key.hex(), "round": round_index,
            "updates": [[c, w, dt, len(raw)] for c, (w, dt, raw) in sorted(updates.items())],
        })
        body = _LEN.pack(len(head)) + head + b"".join(raw for _, (_, _, raw) in sorted(updates.items()))
        return self._sealer.seal(body, label=_LABEL, random_bytes=random_bytes)

    def _unseal(self, sealed: bytes) -> tuple[bytes, int | None, dict[str, tuple[float, str, bytes]]]:
        body = self._sealer.unseal(sealed, label=_LABEL)
        (n,) = _LEN.unpack_from(body)
        head = json.loads(body[_LEN.size : _LEN.size + n])
        offset, updates = _LEN.size + n, {}
        for cid, weight, dtype, size in head["updates"]:
            updates[cid] = (weight, dtype, body[offset : offset + size])
            offset += size
        return bytes.fromhex(head["key"]), head["round"], updates

    # -- steps -------------------------------------------------------------------
    def start(self, *, random_bytes: RandomBytes) -> bytes:
        """A fresh X25519 key for the round, sealed with no updates yet."""
        return self._seal(random_bytes(32), None, {}, random_bytes)

    def public_key(self, sealed: bytes) -> bytes:
        key, _, _ = self._unseal(sealed)
        return AgreementKey.from_private_bytes(key).public_key

    def quote(self, sealed: bytes, *, nonce: bytes, transcript_head: bytes) -> Quote:
        enclave_key = self.public_key(sealed)
        body = QuoteBody(
            version=QUOTE_VERSION, measurement=self.measurement, signer_id=SIGNER_ID,
            svn=self.svn, debug=self.debug, platform_id=self.platform.platform_id,
            simulated=True,
            report_data=report_data(nonce=nonce, enclave_public_key=enclave_key,
                                    transcript_head=transcript_head),
        )
        return Quote(body=body, signature=self.platform.sign(body.signed_bytes()),
                     certificate=self.platform.certificate,
                     evidence=Evidence(nonce=nonce, enclave_public_key=enclave_key,
                                       transcript_head=transcript_head))

    def ingest(
        self,
        sealed: bytes,
        *,
        setup: RoundSetup,
        submissions: Sequence[tuple[str, bytes, bytes]],
        random_bytes: RandomBytes,
    ) -> tuple[bytes, dict[str, str]]:
        """Open each (client, client key, sealed update); keep the valid ones sealed.
        Returns the new sealed state and the reason for every rejected client."""
        key, round_index, updates = self._unseal(sealed)
        if round_index not in (None, setup.round_index):
            raise ProtocolAbort(f"the enclave state holds round {round_index}, not "
                                f"{setup.round_index}: one state, one round")
        own = AgreementKey.from_private_bytes(key)
        bad: dict[str, str] = {}
        for cid, client_key, blob in submissions:
            context = channel_context(round_index=setup.round_index, client_id=cid,
                                      client_key=client_key, enclave_key=own.public_key,
                                      measurement=self.measurement)
            try:
                plain = open_in_enclave(own=own, client_key=client_key, context=context, sealed=blob)
                updates[cid] = _parse_update(plain, setup)
            except (AeadError, ProtocolInputError) as exc:
                bad[cid] = f"update rejected in the enclave: {exc}"
        # The channel binds setup.round_index: an update opened here is of that round.
        return self._seal(key, setup.round_index, updates, random_bytes), bad

    def release(self, sealed: bytes, *, survivors: Sequence[str]) -> Release:
        """The weighted sum over the surviving contributors, in client-id order (the
        summation order of `plain`, so the two agree bit for bit)."""
        key, round_index, updates = self._unseal(sealed)
        kept = tuple(sorted(c for c in survivors if c in updates))
        if len(kept) < self.min_survivors:
            raise ProtocolAbort(
                f"the enclave releases no sum of {len(kept)} updates (minimum {self.min_survivors})"
            )
        # A second sum of this state over other contributors would give their difference;
        # the same set again gives the same sum (a retransmission) and tells nothing new.
        if self._released.setdefault(hashlib.sha256(key).digest(), kept) != kept:
            raise ProtocolAbort(f"the enclave already released a sum of round {round_index} "
                                "over other contributors")
        length = None
        acc: np.ndarray | None = None
        for cid in kept:
            weight, dtype, raw = updates[cid]
            vector = np.frombuffer(raw, dtype=_DTYPES[dtype])
            length = vector.shape[0] if length is None else length
            acc = np.zeros(length, dtype=np.float64) if acc is None else acc
            acc += weight * vector.astype(np.float64)
        total = math.fsum(updates[c][0] for c in kept)
        return Release(weighted_sum=acc if acc is not None else np.zeros(0), total_weight=total,
                       contributors=tuple(kept))


def _parse_update(plain: bytes, setup: RoundSetup) -> tuple[float, str, bytes]:
    try:
        (n,) = _LEN.unpack_from(plain)
        head = json.loads(plain[_LEN.size : _LEN.size + n])
        weight, dtype, length = float(head["weight"]), head["dtype"], head["length"]
    except (struct.error, ValueError, KeyError, TypeError):
        raise ProtocolInputError("malformed update") from None
    raw = plain[_LEN.size + n :]
    spec = setup.vector
    if dtype != spec.dtype or length != spec.length or len(raw) != length * np.dtype(_DTYPES[dtype]).itemsize:
        raise ProtocolInputError(f"update is not {spec.length} x {spec.dtype}")
    if not math.isfinite(weight) or weight < 0:
        raise ProtocolInputError("weight must be finite and >= 0")
    vector = np.frombuffer(raw, dtype=_DTYPES[dtype])
    if vector.dtype.kind == "f" and not np.isfinite(vector).all():
        raise ProtocolInputError("update has non-finite values")
    return weight, dtype, raw
