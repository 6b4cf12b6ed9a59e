"""X.509 certificates over P-384 keys, and deterministic ECDSA-SHA384 (RFC 6979).

What the simulated TEE needs of a PKI, and no more: a vendor root that certifies
platform keys, platform keys that sign quotes, and a verifier that checks both.
Callers see `Certificate`, `P384SigningKey` and `P384PublicKey`; no object of the
`cryptography` backend leaves this module, so that the TEE code cannot reach for
a signature or cipher object the hazmat layer does not offer.

Signatures are deterministic (RFC 6979): the same key and bytes give the same
signature, which keeps protocol rounds reproducible under an injected test source.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import NameOID

_P384_ORDER = int(
    "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
    16,
)
_ECDSA_SHA384 = ec.ECDSA(hashes.SHA384(), deterministic_signing=True)
_ORGANIZATION = "securediff simulation (not hardware)"


class P384PublicKey:
    """A P-384 public key: verifies deterministic ECDSA-SHA384 signatures."""

    __slots__ = ("_key",)

    def __init__(self, key: ec.EllipticCurvePublicKey) -> None:
        self._key = key

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            self._key.verify(signature, data, _ECDSA_SHA384)
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True

    def spki(self) -> bytes:
        """DER SubjectPublicKeyInfo: what identifies the key, whatever certifies it."""
        return self._key.public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, P384PublicKey) and other.spki() == self.spki()

    def __hash__(self) -> int:
        return hash(self.spki())


class P384SigningKey:
    """An in-memory P-384 private key (no export); signs with deterministic ECDSA-SHA384."""

    __slots__ = ("_key",)

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key

    @classmethod
    def from_material(cls, material: bytes) -> P384SigningKey:
        """The key of at least 64 uniform bytes (reduced mod the order: bias below 2^-128)."""
        if not isinstance(material, bytes) or len(material) < 64:
            raise ValueError("a P-384 key needs 64 bytes of material")
        scalar = int.from_bytes(material, "big") % (_P384_ORDER - 1) + 1
        return cls(ec.derive_private_key(scalar, ec.SECP384R1()))

    @property
    def public_key(self) -> P384PublicKey:
        return P384PublicKey(self._key.public_key())

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data, _ECDSA_SHA384)

    def __reduce__(self) -> object:
        raise TypeError("private keys cannot be pickled")


class Certificate:
    """One X.509 certificate, compared by its DER bytes."""

    __slots__ = ("_cert",)

    def __init__(self, cert: x509.Certificate) -> None:
        self._cert = cert

    @classmethod
    def from_pem(cls, pem: bytes) -> Certificate:
        """`ValueError` unless `pem` holds a certificate."""
        return cls(x509.load_pem_x509_certificate(pem))

    @classmethod
    def from_der(cls, der: bytes) -> Certificate:
        """`ValueError` unless `der` is a certificate."""
        return cls(x509.load_der_x509_certificate(der))

    def der(self) -> bytes:
        return self._cert.public_bytes(Encoding.DER)

    def pem(self) -> bytes:
        return self._cert.public_bytes(Encoding.PEM)

    def sha256(self) -> str:
        """SHA-256 of the DER, hex."""
        return self._cert.fingerprint(hashes.SHA256()).hex()

    @property
    def common_name(self) -> str | None:
        names = self._cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
        return str(names[0].value) if names else None

    def public_key_spki(self) -> bytes:
        return self._cert.public_key().public_bytes(Encoding.DER, PublicFormat.SubjectPublicKeyInfo)

    def p384_public_key(self) -> P384PublicKey | None:
        """The subject key if it is a P-384 key, else None."""
        key = self._cert.public_key()
        if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp384r1":
            return P384PublicKey(key)
        return None

    def is_end_entity(self) -> bool:
        """Basic constraints present and not a CA."""
        try:
            constraints = self._cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            return False
        return not constraints.ca

    def has_basic_constraints(self) -> bool:
        try:
            self._cert.extensions.get_extension_for_class(x509.BasicConstraints)
        except x509.ExtensionNotFound:
            return False
        return True

    def valid_at(self, now: dt.datetime) -> bool:
        return self._cert.not_valid_before_utc <= now <= self._cert.not_valid_after_utc

    def issued_by(self, issuer: Certificate) -> bool:
        """Issuer name matches and the issuer's key signed this certificate."""
        try:
            self._cert.verify_directly_issued_by(issuer._cert)
        except (ValueError, TypeError, InvalidSignature):
            return False
        return True

    def signed_by_key(self, key: P384PublicKey) -> bool:
        """Signed by `key`, whatever issuer name the certificate gives."""
        algorithm = self._cert.signature_hash_algorithm
        if algorithm is None:
            return False
        try:
            key._key.verify(self._cert.signature, self._cert.tbs_certificate_bytes,
                            ec.ECDSA(algorithm))
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Certificate) and other.der() == self.der()

    def __hash__(self) -> int:
        return hash(self.der())

    def __repr__(self) -> str:
        return f"Certificate(cn={self.common_name!r}, sha256={self.sha256()[:16]}...)"


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, _ORGANIZATION),
                      x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
        crl_sign=cert_sign, encipher_only=False, decipher_only=False,
    )


def self_signed_root(key: P384SigningKey, *, common_name: str,
                     not_before: dt.datetime, not_after: dt.datetime) -> Certificate:
    """A CA certificate (path length 0: it certifies end entities only) of `key`."""
    subject = _name(common_name)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key._key.public_key())
        .serial_number(1)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(key._key, hashes.SHA384(), ecdsa_deterministic=True)
    )
    return Certificate(cert)


def certify_end_entity(issuer_key: P384SigningKey, issuer: Certificate, *,
                       public_key: P384PublicKey, common_name: str, serial: int,
                       not_before: dt.datetime, not_after: dt.datetime) -> Certificate:
    """An end-entity (signing-only) certificate of `public_key`, issued under `issuer`."""
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(issuer._cert.subject)
        .public_key(public_key._key)
        .serial_number(serial)
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .sign(issuer_key._key, hashes.SHA384(), ecdsa_deterministic=True)
    )
    return Certificate(cert)
