"""Known-answer vectors for every hazmat entry point that takes raw bytes: the
protocols build byte-for-byte on these, so a change of backend or of argument
order shows here first."""

import math
import struct

import numpy as np
import pytest

from protocols.errors import ProtocolInputError
from protocols.hazmat.aead import AeadError, open_sealed, seal
from protocols.hazmat.chacha import chacha20_stream, standard_normal, uniforms
from protocols.hazmat.kdf import hkdf_sha256, hkdf_sha384
from protocols.hazmat.kex import AgreementKey
from protocols.hazmat.signing import SigningKey, verify_signature

h = bytes.fromhex


# McGrew & Viega, "The Galois/Counter Mode of Operation", test case 16 (AES-256,
# 96-bit IV, with associated data), as in NIST's GCM validation suite.
GCM_KEY = h("feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308")
GCM_IV = h("cafebabefacedbaddecaf888")
GCM_AAD = h("feedfacedeadbeeffeedfacedeadbeefabaddad2")
GCM_PT = h(
    "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72"
    "1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39"
)
GCM_CT = h(
    "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa"
    "8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662"
)
GCM_TAG = h("76fc6ece0f4e1768cddf8853bb2d551b")


def test_aes_gcm_with_an_injected_nonce_matches_the_gcm_vector():
    sealed = seal(GCM_KEY, GCM_PT, associated_data=GCM_AAD, nonce=GCM_IV)
    assert sealed == GCM_IV + GCM_CT + GCM_TAG
    assert open_sealed(GCM_KEY, sealed, associated_data=GCM_AAD) == GCM_PT


def test_aes_gcm_zero_key_vectors():
    # Test cases 13 and 14: the all-zero 256-bit key and IV.
    assert seal(bytes(32), b"", associated_data=b"", nonce=bytes(12)) == bytes(12) + h(
        "530f8afbc74536b9a963b4f1c4cb738b")
    assert seal(bytes(32), bytes(16), associated_data=b"", nonce=bytes(12)) == bytes(12) + h(
        "cea7403d4d606b6e074ec5d3baf39d18d0d1c8a799996bf0265b98b5d48ab919")


@pytest.mark.parametrize("nonce", [b"", bytes(11), bytes(16), "cafebabefacedbaddecaf888"])
def test_aes_gcm_refuses_a_nonce_that_is_not_96_bits(nonce):
    with pytest.raises(AeadError):
        seal(GCM_KEY, b"x", associated_data=b"", nonce=nonce)


# RFC 7748, section 6.1.
ALICE_SK = h("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a")
ALICE_PK = h("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a")
BOB_SK = h("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb")
BOB_PK = h("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f")
SHARED = h("4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742")


def test_x25519_from_raw_bytes_matches_rfc7748():
    alice, bob = AgreementKey.from_private_bytes(ALICE_SK), AgreementKey.from_private_bytes(BOB_SK)
    assert alice.public_key == ALICE_PK and bob.public_key == BOB_PK
    assert alice.exchange(BOB_PK) == SHARED == bob.exchange(ALICE_PK)
    assert alice.derive(BOB_PK, info=b"ctx") == hkdf_sha256(SHARED, info=b"ctx")


@pytest.mark.parametrize("raw", [b"", bytes(31), bytes(33), bytearray(32)])
def test_x25519_refuses_a_private_key_that_is_not_32_bytes(raw):
    with pytest.raises(ProtocolInputError):
        AgreementKey.from_private_bytes(raw)


# RFC 8032, section 7.1, tests 1 and 2.
ED25519 = [
    ("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
     "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a", "",
     "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e3970"
     "1cf9b46bd25bf5f0595bbe24655141438e7a100b"),
    ("4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
     "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c", "72",
     "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613"
     "d0f11d8c387b2eaeb4302aeeb00d291612bb0c00"),
]


@pytest.mark.parametrize(("sk", "pk", "msg", "sig"), ED25519)
def test_ed25519_from_raw_bytes_matches_rfc8032(sk, pk, msg, sig):
    key = SigningKey.from_private_bytes(h(sk))
    assert key.public_key == h(pk)
    assert key.sign(h(msg)) == h(sig)
    assert verify_signature(public_key=h(pk), message=h(msg), signature=h(sig))
    assert not verify_signature(public_key=h(pk), message=h(msg) + b"!", signature=h(sig))


def test_ed25519_refuses_a_private_key_that_is_not_32_bytes():
    with pytest.raises(ValueError):
        SigningKey.from_private_bytes(bytes(64))


# RFC 8439, appendix A.1 test vector 1 (zero key, zero nonce, block 0) and
# section 2.4.2 (the "sunscreen" encryption, block counter 1).
CHACHA_ZERO = h(
    "76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7"
    "da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586"
)
SUNSCREEN = (b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for "
             b"the future, sunscreen would be it.")
SUNSCREEN_CT = h(
    "6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0b"
    "f91b65c5524733ab8f593dabcd62b3571639d624e65152ab8f530c359f0861d8"
    "07ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806818ce91ab7793736"
    "5af90bbf74a35be6b40b8eedf2785e42874d"
)


def test_chacha20_keystream_matches_rfc8439():
    stream = chacha20_stream(bytes(32))
    assert stream(10) + stream(54) == CHACHA_ZERO  # successive calls continue the stream
    keystream = chacha20_stream(bytes(range(32)), nonce=h("000000000000004a00000000"),
                                counter=1)(len(SUNSCREEN))
    assert bytes(a ^ b for a, b in zip(SUNSCREEN, keystream, strict=True)) == SUNSCREEN_CT


@pytest.mark.parametrize("kwargs", [{"key": bytes(31)}, {"key": bytes(32), "nonce": bytes(16)},
                                    {"key": bytes(32), "counter": 1 << 32}])
def test_chacha20_refuses_bad_parameters(kwargs):
    with pytest.raises(ProtocolInputError):
        chacha20_stream(**kwargs)


def test_uniforms_and_box_muller_from_the_rfc_keystream():
    """Recomputed here by hand from the RFC 8439 keystream, one word at a time."""
    words = struct.unpack("<8Q", CHACHA_ZERO)
    u = [((w >> 11) + 1) * 2.0**-53 for w in words]
    assert uniforms(chacha20_stream(bytes(32)), 8).tolist() == u
    z = standard_normal(chacha20_stream(bytes(32)), 7)
    radius = [math.sqrt(-2.0 * math.log(x)) for x in u[:4]]
    angle = [2.0 * math.pi * x for x in u[4:]]
    want = [r * math.cos(a) for r, a in zip(radius, angle, strict=True)] + [
        r * math.sin(a) for r, a in zip(radius, angle, strict=True)]
    np.testing.assert_allclose(z, want[:7], rtol=1e-15, atol=0)
    assert z.dtype == np.float64 and z.shape == (7,)


def test_uniforms_never_reach_zero():
    assert uniforms(lambda n: bytes(n), 3).tolist() == [2.0**-53] * 3
    assert uniforms(lambda n: b"\xff" * n, 1).tolist() == [1.0]


# RFC 5869, appendix A, test case 1 (SHA-256).
def test_hkdf_sha256_matches_rfc5869():
    okm = hkdf_sha256(b"\x0b" * 22, salt=bytes(range(13)), info=bytes(range(0xF0, 0xFA)),
                      length=42)
    assert okm == h("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
                    "34007208d5b887185865")


def test_hkdf_sha384_matches_its_definition():
    """RFC 5869 has no SHA-384 vectors: compute extract-then-expand with hmac."""
    import hashlib
    import hmac

    ikm, salt, info = b"\x0b" * 22, bytes(range(13)), b"info"
    prk = hmac.new(salt, ikm, hashlib.sha384).digest()
    t1 = hmac.new(prk, info + b"\x01", hashlib.sha384).digest()
    assert hkdf_sha384(ikm, salt=salt, info=info, length=40) == t1[:40]
    prk0 = hmac.new(bytes(48), ikm, hashlib.sha384).digest()  # no salt: HashLen zeros
    assert hkdf_sha384(ikm, info=info) == hmac.new(prk0, info + b"\x01", hashlib.sha384).digest()[:32]
