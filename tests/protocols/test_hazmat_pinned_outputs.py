"""Pinned outputs of whole protocol runs with fixed keys and fixed randomness.

Every hazmat primitive a protocol uses (AES-GCM with its injected nonces, X25519
and Ed25519 keys from raw bytes, HKDF, the PRG, the ChaCha20 Gaussian) feeds these
bytes, so a change of any of them, or of how a protocol calls them, changes a
digest here. Moving code between modules must leave them as they are; a change of
the wire format changes them too (last: binary id lists and keys, and RouteKeys
carrying only neighbours' keys with Merkle proofs), while the unmasked sum stays."""

import hashlib

import numpy as np

from protocols.ckks.noise import gaussian
from protocols.driver import run_round
from protocols.hazmat.signing import SigningKey
from protocols.registry import make_protocol
from protocols.roster import Identities
from protocols.stages import ClientInput
from protocols.transcript import TranscriptWriter

CLIENTS = ("c0", "c1", "c2", "c3")


def _fixed_bytes(seed: int):
    state = {"counter": 0}

    def random_bytes(n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(f"{seed}:{state['counter']}".encode()).digest()
            state["counter"] += 1
        return out[:n]

    return random_bytes


def _identities() -> Identities:
    keys = {p: SigningKey.from_private_bytes(hashlib.sha256(p.encode()).digest())
            for p in (*CLIENTS, "aggregator")}
    return Identities(keys, aggregator_id="aggregator")


def _inputs() -> dict[str, ClientInput]:
    return {c: ClientInput(vector=np.arange(16, dtype=np.float64) * (i + 1), weight=1.0 + i)
            for i, c in enumerate(CLIENTS)}


def test_a_secagg_round_with_a_dropout_is_pinned():
    ids = _identities()
    protocol = make_protocol("secagg").bind(ids)
    wire = hashlib.sha256()

    def tap(stage: str, data: bytes) -> bytes:
        wire.update(data)
        return data

    result = run_round(protocol, round_index=0, inputs=_inputs(), identities=ids, transcript=None,
                       random_bytes=_fixed_bytes(7), tap=tap,
                       dropouts={"c3": protocol.stages[-1].name})
    assert wire.hexdigest() == "8b3c27e772b0b6ccf0a81540875daef9bd7a008b99740eb366aed8f63ec99ec1"
    assert hashlib.sha256(result.weighted_sum.tobytes()).hexdigest() == (
        "6ff9e66ed55d0699fac6d8cc3e6e1882708d1d8b759bf57a4ac73cce53337138")


def test_a_two_round_secagg_transcript_is_pinned(tmp_path):
    ids = _identities()
    protocol = make_protocol("secagg").bind(ids)
    path = tmp_path / "transcript.jsonl"
    with TranscriptWriter.open(path, identities=ids, protocol=protocol, planned_rounds=(0, 2)) as tw:
        for r in range(2):
            run_round(protocol, round_index=r, inputs=_inputs(), identities=ids, transcript=tw,
                      random_bytes=_fixed_bytes(7 + r))
    assert hashlib.sha256(path.read_bytes()).hexdigest() == (
        "fffe80fc32d56c93d42af897380bbcae2039bf283986e68f289853553ab77572")


def test_ckks_flooding_noise_is_pinned():
    z = gaussian(1001, sigma=2.5, random_bytes=_fixed_bytes(3))
    assert hashlib.sha256(z.tobytes()).hexdigest() == (
        "2564178ae0083beb45cfa37555b51b9040f2df0919b7da91415893921f98b230")
