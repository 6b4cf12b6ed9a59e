"""Wire messages of the `ckks` protocol (type codes 0x04xx), one type per stage.

Ciphertexts travel as uint8 arrays in the message payload (bytes fields go
hex-encoded into the size-limited header); `sizes` splits the payload into SEAL
blobs. A client with nothing to say in a client stage sends the type with
empty fields: the stage machine wants one message from every reachable client.
Signatures are Ed25519 under the sender's roster identity key over the
statements of `protocols.ckks.signed` (64 bytes each; empty when the protocol
is not bound to a roster).
"""

from __future__ import annotations

import numpy as np

from protocols.messages import Message, message_type


@message_type(code=0x0401, name="ckks.AdvertiseKey", stage="AdvertiseKey")
class AdvertiseKey(Message):
    public_key: bytes  # X25519, fresh for the round
    signature: bytes  # of signed.advert_statement


@message_type(code=0x0402, name="ckks.KeyDirectory", stage="KeyDirectory")
class KeyDirectory(Message):
    clients: tuple[str, ...]
    public_keys: bytes  # 32 bytes per client, in `clients` order
    signatures: bytes  # each client's advert signature, in `clients` order


@message_type(code=0x0403, name="ckks.ShareSeed", stage="ShareSeed")
class ShareSeed(Message):
    recipients: tuple[str, ...]
    sealed: bytes  # one fixed-size sealed key seed per recipient, in order


@message_type(code=0x0404, name="ckks.DeliverSeed", stage="DeliverSeed")
class DeliverSeed(Message):
    keyholder: str
    sealed: bytes  # empty for the keyholder itself


@message_type(code=0x0405, name="ckks.SubmitCiphertext", stage="SubmitCiphertext")
class SubmitCiphertext(Message):
    weight: float
    signature: bytes  # of signed.ciphertext_statement over the ciphertexts' digest
    sizes: np.ndarray  # int64, one per ciphertext
    data: np.ndarray  # uint8, the ciphertexts back to back


@message_type(code=0x0409, name="ckks.ProposeContributors", stage="ProposeContributors")
class ProposeContributors(Message):
    keyholder: str
    contributors: tuple[str, ...]
    digests: bytes  # each contributor's signed.ciphertext_digest, in `contributors` order


@message_type(code=0x040A, name="ckks.SignContributors", stage="SignContributors")
class SignContributors(Message):
    signature: bytes  # of signed.list_statement; empty from a client that signs nothing


@message_type(code=0x0406, name="ckks.RequestDecryption", stage="RequestDecryption")
class RequestDecryption(Message):
    """To a decryptor: every contributor's own ciphertexts and signatures, from which
    it recomputes the sum itself; there is no field for a sum. To the others: the
    contributor list alone, every other field empty."""

    contributors: tuple[str, ...]
    decrypt: bool
    signers: tuple[str, ...]  # of the contributor list
    list_signatures: bytes  # 64 bytes per signer
    weights: np.ndarray  # float64, one per contributor
    ciphertext_signatures: bytes  # 64 bytes per contributor
    sizes: np.ndarray  # int64, the ciphertexts of every contributor in list order
    data: np.ndarray  # uint8


@message_type(code=0x0407, name="ckks.ReturnDecryption", stage="ReturnDecryption")
class ReturnDecryption(Message):
    values: np.ndarray  # float64, noise-flooded; empty from non-decryptors


@message_type(code=0x0408, name="ckks.BroadcastAggregate", stage="BroadcastAggregate")
class BroadcastAggregate(Message):
    total_weight: float
    contributors: tuple[str, ...]
    weighted_sum: np.ndarray


def pack(blobs: tuple[bytes, ...] | list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    sizes = np.array([len(b) for b in blobs], dtype=np.int64)
    data = np.frombuffer(b"".join(blobs), dtype=np.uint8) if blobs else np.zeros(0, np.uint8)
    return sizes, data


def unpack(sizes: np.ndarray, data: np.ndarray) -> tuple[bytes, ...] | None:
    """The blobs, or None when the sizes do not tile the data exactly."""
    if sizes.ndim != 1 or data.ndim != 1 or sizes.dtype.kind != "i" or (sizes <= 0).any():
        return None
    if int(sizes.sum()) != data.shape[0]:
        return None
    raw = data.tobytes()
    ends = np.cumsum(sizes)
    starts = ends - sizes
    return tuple(raw[int(s) : int(e)] for s, e in zip(starts, ends, strict=True))
