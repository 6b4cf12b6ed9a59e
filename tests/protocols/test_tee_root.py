"""The attestation root the clients trust. The simulated root's private key is derived
from a published label, so the aggregator can mint a quote under it that binds its OWN
key (and claims `simulated: false`), and read every update sealed to it: nothing is
confidential against the aggregator's operator, as every output says. With another
root configured, such a quote is refused with its own error and the round aborts."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocols.driver import run_round
from protocols.errors import ProtocolAbort, ProtocolInputError
from protocols.messages import decode, encode
from protocols.registry import make_protocol
from protocols.tee import (
    SIMULATED_NOTICE,
    AttestationPolicy,
    Evidence,
    Quote,
    QuoteBody,
    SimulatedPlatform,
    SimulatedQuoteError,
    SimulatedRootError,
    SimulatedVendor,
    TeeProtocol,
    report_data,
    root_fingerprint,
    verify_quote,
)
from protocols.tee.channel import agreement_key, channel_context, open_in_enclave
from protocols.tee.enclave import encode_update
from protocols.tee.messages import Attest, SubmitSealed
from protocols.tee.quote import QUOTE_VERSION, SIGNER_ID
from protocols.tee.vendor import WELL_KNOWN_LABEL, p384_key
from protocols.transcript import TranscriptWriter, verify_transcript


@pytest.fixture(scope="module")
def real_root() -> SimulatedVendor:
    """Stands in for a hardware vendor's root: its key is not public."""
    return SimulatedVendor.generate(name="a real vendor root (test)")


def _pem(vendor: SimulatedVendor) -> str:
    return vendor.certificate.pem().decode("ascii")


def _public_root() -> SimulatedVendor:
    """What anyone can rebuild from the published label alone."""
    material = HKDF(algorithm=hashes.SHA384(), length=64, salt=None, info=b"root").derive(
        WELL_KNOWN_LABEL)
    return SimulatedVendor(key=p384_key(material), certificate=SimulatedVendor.well_known().certificate)


def _mint(*, measurement: str, nonce: bytes, head: bytes, key: bytes) -> Quote:
    """A quote from no enclave at all: signed by a platform the minter certified under the
    public root, claiming real hardware, binding the minter's own key."""
    platform = SimulatedPlatform.create(vendor=_public_root())
    body = QuoteBody(version=QUOTE_VERSION, measurement=measurement, signer_id=SIGNER_ID, svn=1,
                     debug=False, platform_id=platform.platform_id, simulated=False,
                     report_data=report_data(nonce=nonce, enclave_public_key=key,
                                             transcript_head=head))
    return Quote(body=body, signature=platform.sign(body.signed_bytes()),
                 certificate=platform.certificate,
                 evidence=Evidence(nonce=nonce, enclave_public_key=key, transcript_head=head))


class _ActiveAggregator:
    """A tap: swaps the enclave key for its own, with a minted quote binding it, then opens
    whatever the clients seal to that key."""

    def __init__(self, protocol: TeeProtocol) -> None:
        self.protocol, self.own, self.read = protocol, agreement_key(os.urandom), {}

    def __call__(self, stage: str, data: bytes) -> bytes:
        msg = decode(data)
        if isinstance(msg, Attest):
            ev = Quote.from_json(msg.quote).evidence
            quote = _mint(measurement=self.protocol.measurement, nonce=ev.nonce,
                          head=ev.transcript_head, key=self.own.public_key)
            return encode(dataclasses.replace(msg, enclave_key=self.own.public_key,
                                              quote=quote.to_json()))
        if isinstance(msg, SubmitSealed) and msg.client_key:
            context = channel_context(round_index=msg.round_index, client_id=msg.sender,
                                      client_key=msg.client_key, enclave_key=self.own.public_key,
                                      measurement=self.protocol.measurement)
            self.read[msg.sender] = open_in_enclave(own=self.own, client_key=msg.client_key,
                                                    context=context, sealed=msg.sealed.tobytes())
        return data


def test_under_the_simulated_root_the_aggregator_reads_every_update(identities, make_inputs) -> None:
    protocol = TeeProtocol()
    attacker = _ActiveAggregator(protocol)
    inputs = make_inputs(seed=5)
    with pytest.raises(ProtocolAbort):  # the real enclave cannot open what went to the attacker
        run_round(protocol, round_index=0, inputs=inputs, identities=identities,
                  transcript=None, tap=attacker)
    assert sorted(attacker.read) == sorted(inputs)
    for cid, inp in inputs.items():
        assert attacker.read[cid] == encode_update(weight=inp.weight, vector=inp.vector)
    # ... which is what the protocol says of itself
    assert SIMULATED_NOTICE in TeeProtocol.guarantee


def test_with_a_real_root_the_minted_quote_is_refused_and_the_round_aborts(
        identities, make_inputs, real_root, tmp_path: Path) -> None:
    protocol = make_protocol("tee", attestation_root=_pem(real_root))
    attacker = _ActiveAggregator(protocol)
    path = tmp_path / "t.jsonl"
    with TranscriptWriter.open(path, identities=identities, protocol=protocol) as tw:
        with pytest.raises(SimulatedRootError, match="public simulated root"):
            run_round(protocol, round_index=0, inputs=make_inputs(), identities=identities,
                      transcript=tw, tap=attacker)
    assert attacker.read == {}
    report = verify_transcript(path, identities.roster())  # the header's params rebuild it
    assert report.ok and report.aborted_rounds == 1 and report.rounds == 0
    assert '"stage":"SubmitSealed"' not in path.read_text()


def test_with_a_real_root_the_simulated_enclave_aborts_every_round(
        identities, make_inputs, real_root) -> None:
    protocol = make_protocol("tee", attestation_root=_pem(real_root))
    for r in range(2):
        with pytest.raises(SimulatedRootError):
            run_round(protocol, round_index=r, inputs=make_inputs(seed=r), identities=identities,
                      transcript=None)


def test_a_platform_certified_by_the_configured_root_is_accepted(
        identities, make_inputs, real_root) -> None:
    """The refusal is about the root: the same code on a platform of the real vendor runs."""
    protocol = TeeProtocol(attestation_root=_pem(real_root),
                           platform=SimulatedPlatform.create(vendor=real_root))
    inputs = make_inputs(seed=1)
    result = run_round(protocol, round_index=0, inputs=inputs, identities=identities,
                       transcript=None)
    np.testing.assert_array_equal(result.weighted_sum,
                                  sum(i.weight * i.vector for i in inputs.values()))
    stats = result.stats["protocol"]
    assert stats["attestation_root_sha256"] == root_fingerprint(real_root.certificate)
    assert stats["attestation_root_simulated"] is False and stats["notice"] == SIMULATED_NOTICE


def test_the_simulated_root_accepts_with_the_notice(identities, make_inputs) -> None:
    result = run_round(TeeProtocol(), round_index=0, inputs=make_inputs(), identities=identities,
                       transcript=None)
    stats = result.stats["protocol"]
    assert stats["notice"] == SIMULATED_NOTICE and stats["attestation_root_simulated"] is True
    # naming the simulated root explicitly (or a re-issued certificate of its key) is no real root
    reissued = SimulatedVendor._self_signed(_public_root().key, "another name, the same public key")
    for pem in (_pem(SimulatedVendor.well_known()), _pem(reissued)):
        assert TeeProtocol(attestation_root=pem).policy.simulated_root


def test_production_refuses_a_minted_quote_that_claims_hardware() -> None:
    """`simulated` is the quote's own word: production must not rely on it."""
    measurement, nonce, head, key = "ab" * 48, os.urandom(32), bytes(32), os.urandom(32)
    quote = _mint(measurement=measurement, nonce=nonce, head=head, key=key)
    args = dict(quote=quote, nonce=nonce, enclave_public_key=key, transcript_head=head)
    assert verify_quote(policy=AttestationPolicy(allowed_measurements=(measurement,)), **args)
    with pytest.raises(SimulatedRootError) as caught:
        verify_quote(policy=AttestationPolicy(allowed_measurements=(measurement,),
                                              production=True), **args)
    assert isinstance(caught.value, SimulatedQuoteError) and caught.value.check == "simulated_root"


def test_root_parameter_round_trips_as_json_and_rejects_junk(real_root) -> None:
    p = make_protocol("tee", attestation_root=_pem(real_root))
    params = json.loads(json.dumps(p.params))
    assert params["attestation_root"] == _pem(real_root)
    assert make_protocol("tee", **params).params == p.params
    assert make_protocol("tee").params["attestation_root"] is None
    for bad in ("not a pem", 42, "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"):
        with pytest.raises(ProtocolInputError):
            make_protocol("tee", attestation_root=bad)
