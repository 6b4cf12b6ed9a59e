"""Wire messages of the `tee` protocol (type codes 0x05xx), one type per stage."""

from __future__ import annotations

import numpy as np

from protocols.messages import Message, message_type


@message_type(code=0x0501, name="tee.RequestQuote", stage="RequestQuote")
class RequestQuote(Message):
    nonce: bytes  # 32 fresh bytes: the client's attestation challenge


@message_type(code=0x0502, name="tee.Attest", stage="Attest")
class Attest(Message):
    quote: bytes  # the quote document (canonical JSON), see protocols.tee.quote
    enclave_key: bytes  # the X25519 key the quote binds


@message_type(code=0x0503, name="tee.SubmitSealed", stage="SubmitSealed")
class SubmitSealed(Message):
    client_key: bytes  # X25519, fresh for the round; empty if the client did not attest
    sealed: np.ndarray  # uint8: AES-GCM of the update under the channel key


@message_type(code=0x0504, name="tee.BroadcastAggregate", stage="BroadcastAggregate")
class BroadcastAggregate(Message):
    total_weight: float
    survivors: tuple[str, ...]
    weighted_sum: np.ndarray
