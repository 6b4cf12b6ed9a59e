"""A SIMULATED hardware vendor and platform: X.509 certificates over P-384 keys.

In SGX/TDX and SEV-SNP a vendor root key certifies a key per platform, and the
platform key signs quotes. This module plays both roles in software:

- `SimulatedVendor.well_known()` is the trust anchor of the simulation. Its
  private key is derived from a published label, so ANYONE can mint platform
  certificates and quotes under it: a quote that chains to it proves nothing
  about hardware. It exists so that every process (the CLI included) verifies
  the same chain; production verification rejects simulated quotes outright.
- `SimulatedPlatform` holds a platform signing key and a platform sealing
  secret drawn from the injected source (the OS by default), and a certificate
  from the vendor.

Signatures are deterministic ECDSA (RFC 6979), so the same inputs give the same
bytes, which keeps protocol rounds reproducible under an injected test source.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from protocols.hazmat.kdf import hkdf_sha384

RandomBytes = Callable[[int], bytes]
WELL_KNOWN_LABEL = b"securediff SIMULATED TEE vendor root v1 -- public key material, not a root of trust"
_P384_ORDER = int(
    "ffffffffffffffffffffffffffffffffffffffffffffffffc7634d81f4372ddf581a0db248b0a77aecec196accc52973",
    16,
)
_ROOT_VALIDITY = (dt.datetime(2020, 1, 1, tzinfo=dt.UTC), dt.datetime(2100, 1, 1, tzinfo=dt.UTC))
SIGNATURE = ec.ECDSA(hashes.SHA384(), deterministic_signing=True)


def p384_key(material: bytes) -> ec.EllipticCurvePrivateKey:
    """A P-384 private key from at least 64 uniform bytes (bias below 2^-128)."""
    if len(material) < 64:
        raise ValueError("a P-384 key needs 64 bytes of material")
    scalar = int.from_bytes(material, "big") % (_P384_ORDER - 1) + 1
    return ec.derive_private_key(scalar, ec.SECP384R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "securediff simulation (not hardware)"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


@dataclass(frozen=True)
class SimulatedVendor:
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def well_known(cls) -> SimulatedVendor:
        return _well_known()

    @classmethod
    def generate(cls, *, name: str, random_bytes: RandomBytes = os.urandom) -> SimulatedVendor:
        """Another root (tests use one to build a chain the verifier must refuse)."""
        return cls._self_signed(p384_key(random_bytes(64)), name)

    @classmethod
    def _self_signed(cls, key: ec.EllipticCurvePrivateKey, name: str) -> SimulatedVendor:
        subject = _name(name)
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(1)
            .not_valid_before(_ROOT_VALIDITY[0])
            .not_valid_after(_ROOT_VALIDITY[1])
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .sign(key, hashes.SHA384(), ecdsa_deterministic=True)
        )
        return cls(key=key, certificate=cert)

    def certify(
        self,
        *,
        public_key: ec.EllipticCurvePublicKey,
        platform_id: str,
        random_bytes: RandomBytes,
        now: dt.datetime,
    ) -> x509.Certificate:
        serial = int.from_bytes(random_bytes(16), "big") >> 1 or 1
        return (
            x509.CertificateBuilder()
            .subject_name(_name(f"securediff simulated platform {platform_id}"))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(serial)
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=3650))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .sign(self.key, hashes.SHA384(), ecdsa_deterministic=True)
        )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign, content_commitment=False, key_encipherment=False,
        data_encipherment=False, key_agreement=False, key_cert_sign=cert_sign,
        crl_sign=cert_sign, encipher_only=False, decipher_only=False,
    )


@lru_cache(maxsize=1)
def _well_known() -> SimulatedVendor:
    material = hkdf_sha384(WELL_KNOWN_LABEL, info=b"root", length=64)
    return SimulatedVendor._self_signed(p384_key(material), "securediff SIMULATED TEE vendor root")


class SimulatedPlatform:
    """One simulated machine: a certified P-384 signing key and a sealing secret.

    Neither secret leaves the object; quotes and sealing keys are derived from them
    (the EREPORT/EGETKEY analogue)."""

    __slots__ = ("_key", "_secret", "certificate", "platform_id")

    def __init__(self, *, key: ec.EllipticCurvePrivateKey, secret: bytes,
                 certificate: x509.Certificate, platform_id: str) -> None:
        self._key = key
        self._secret = secret
        self.certificate = certificate
        self.platform_id = platform_id

    @classmethod
    def create(
        cls,
        *,
        vendor: SimulatedVendor | None = None,
        random_bytes: RandomBytes = os.urandom,
        now: dt.datetime | None = None,
    ) -> SimulatedPlatform:
        vendor = vendor if vendor is not None else SimulatedVendor.well_known()
        key = p384_key(random_bytes(64))
        secret = random_bytes(32)
        platform_id = random_bytes(16).hex()
        when = now if now is not None else dt.datetime.now(dt.UTC)
        cert = vendor.certify(public_key=key.public_key(), platform_id=platform_id,
                              random_bytes=random_bytes, now=when)
        return cls(key=key, secret=secret, certificate=cert, platform_id=platform_id)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data, SIGNATURE)

    def sealing_key(self, measurement: str) -> bytes:
        """HKDF-SHA384(platform secret, measurement): only this code on this platform
        derives it (the MRENCLAVE sealing policy)."""
        info = b"securediff/tee/seal/v1\n" + measurement.encode("ascii")
        return hkdf_sha384(self._secret, info=info)

    def __repr__(self) -> str:
        return f"SimulatedPlatform(id={self.platform_id})"

    def __reduce__(self) -> object:
        raise TypeError("platform secrets cannot be pickled")

