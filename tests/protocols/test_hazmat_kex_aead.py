import pytest

from protocols.errors import ProtocolInputError
from protocols.hazmat.aead import AeadError, open_sealed, seal
from protocols.hazmat.kex import AgreementKey


def test_both_sides_derive_the_same_key_bound_to_info():
    a, b = AgreementKey.generate(), AgreementKey.generate()
    k1 = a.derive(b.public_key, info=b"round-1/share-keys/a-b")
    assert k1 == b.derive(a.public_key, info=b"round-1/share-keys/a-b")
    assert k1 != a.derive(b.public_key, info=b"round-2/share-keys/a-b")
    assert len(k1) == 32


def test_low_order_and_malformed_public_keys_are_refused():
    a = AgreementKey.generate()
    with pytest.raises(ProtocolInputError):
        a.derive(bytes(32), info=b"x")  # the all-zero point gives the all-zero secret
    with pytest.raises(ProtocolInputError):
        a.derive(b"short", info=b"x")


def test_seal_opens_only_with_key_and_context():
    key = bytes(range(32))
    sealed = seal(key, b"share", associated_data=b"round-1|a->b")
    assert open_sealed(key, sealed, associated_data=b"round-1|a->b") == b"share"
    with pytest.raises(AeadError):
        open_sealed(key, sealed, associated_data=b"round-2|a->b")
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(AeadError):
        open_sealed(key, bytes(tampered), associated_data=b"round-1|a->b")
    assert seal(key, b"share", associated_data=b"x") != seal(key, b"share", associated_data=b"x")


def test_agreement_keys_cannot_be_pickled():
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(AgreementKey.generate())
