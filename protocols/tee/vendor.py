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

from protocols.hazmat.certificates import (
    Certificate,
    P384PublicKey,
    P384SigningKey,
    certify_end_entity,
    self_signed_root,
)
from protocols.hazmat.kdf import hkdf_sha384

RandomBytes = Callable[[int], bytes]
WELL_KNOWN_LABEL = b"securediff SIMULATED TEE vendor root v1 -- public key material, not a root of trust"
_ROOT_VALIDITY = (dt.datetime(2020, 1, 1, tzinfo=dt.UTC), dt.datetime(2100, 1, 1, tzinfo=dt.UTC))


def p384_key(material: bytes) -> P384SigningKey:
    """A P-384 private key from at least 64 uniform bytes (bias below 2^-128)."""
    return P384SigningKey.from_material(material)


@dataclass(frozen=True)
class SimulatedVendor:
    key: P384SigningKey
    certificate: Certificate

    @classmethod
    def well_known(cls) -> SimulatedVendor:
        return _well_known()

    @classmethod
    def generate(cls, *, name: str, random_bytes: RandomBytes = os.urandom) -> SimulatedVendor:
        """Another root (tests use one to build a chain the verifier must refuse)."""
        return cls._self_signed(p384_key(random_bytes(64)), name)

    @classmethod
    def _self_signed(cls, key: P384SigningKey, name: str) -> SimulatedVendor:
        cert = self_signed_root(key, common_name=name, not_before=_ROOT_VALIDITY[0],
                                not_after=_ROOT_VALIDITY[1])
        return cls(key=key, certificate=cert)

    def certify(
        self,
        *,
        public_key: P384PublicKey,
        platform_id: str,
        random_bytes: RandomBytes,
        now: dt.datetime,
    ) -> Certificate:
        serial = int.from_bytes(random_bytes(16), "big") >> 1 or 1
        return certify_end_entity(
            self.key, self.certificate, public_key=public_key,
            common_name=f"securediff simulated platform {platform_id}", serial=serial,
            not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=3650))


@lru_cache(maxsize=1)
def _well_known() -> SimulatedVendor:
    material = hkdf_sha384(WELL_KNOWN_LABEL, info=b"root", length=64)
    return SimulatedVendor._self_signed(p384_key(material), "securediff SIMULATED TEE vendor root")


class SimulatedPlatform:
    """One simulated machine: a certified P-384 signing key and a sealing secret.

    Neither secret leaves the object; quotes and sealing keys are derived from them
    (the EREPORT/EGETKEY analogue)."""

    __slots__ = ("_key", "_secret", "certificate", "platform_id")

    def __init__(self, *, key: P384SigningKey, secret: bytes,
                 certificate: Certificate, platform_id: str) -> None:
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
        cert = vendor.certify(public_key=key.public_key, platform_id=platform_id,
                              random_bytes=random_bytes, now=when)
        return cls(key=key, secret=secret, certificate=cert, platform_id=platform_id)

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def sealing_key(self, measurement: str) -> bytes:
        """HKDF-SHA384(platform secret, measurement): only this code on this platform
        derives it (the MRENCLAVE sealing policy)."""
        info = b"securediff/tee/seal/v1\n" + measurement.encode("ascii")
        return hkdf_sha384(self._secret, info=info)

    def __repr__(self) -> str:
        return f"SimulatedPlatform(id={self.platform_id})"

    def __reduce__(self) -> object:
        raise TypeError("platform secrets cannot be pickled")
