"""CKKS through TenSEAL's `sealapi` (Microsoft SEAL), with injected randomness.

SEAL draws every key, mask and error from the PRNG factory of its context. A
factory built from a seed replays one stream for each operation, so a context
seeded once must encrypt at most once: reusing it would give every ciphertext
the same mask and error, and their differences would be plaintext differences.
`CkksContext.encrypt` therefore builds one seeded SEAL context per ciphertext,
each from 64 fresh bytes of the injected source (the price: about 4 ms per
ciphertext). The secret key is a deterministic function of a 64-byte key seed,
which is what clients share: the key itself is never serialised.

`sealapi` serialises only through files; blobs pass through a private
temporary directory (tmpfs where available) and never include a secret key.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np
import tenseal.sealapi as seal

from protocols.ckks.params import CkksParams
from protocols.errors import ProtocolAbort, ProtocolError

KEY_SEED_BYTES = 64
_SEAL_HEADER_BYTES = 16
RandomBytes = Callable[[int], bytes]


class CkksKeyError(ProtocolError, ValueError):
    """A CKKS operation needs the secret key and this context has none."""


class CiphertextError(ProtocolAbort):
    """A ciphertext that does not load under, or does not fit, the agreed parameters."""


def _seed_words(seed: bytes) -> list[int]:
    if len(seed) != KEY_SEED_BYTES:
        raise ProtocolError("a SEAL PRNG seed is 64 bytes")
    return [int(w) for w in np.frombuffer(seed, dtype="<u8")]


@lru_cache(maxsize=8)
def _moduli(n: int, bits: tuple[int, ...]) -> list:
    return seal.CoeffModulus.Create(n, list(bits))


def _seal_context(params: CkksParams, seed: bytes | None, *, expand: bool) -> seal.SEALContext:
    parms = seal.EncryptionParameters(seal.SCHEME_TYPE.CKKS)
    parms.set_poly_modulus_degree(params.poly_modulus_degree)
    parms.set_coeff_modulus(_moduli(params.poly_modulus_degree, params.coeff_mod_bit_sizes))
    if seed is not None:
        parms.set_random_generator(seal.Blake2xbPRNGFactory(_seed_words(seed)))
    ctx = seal.SEALContext(parms, expand, seal.SEC_LEVEL_TYPE.TC128)
    if not ctx.parameters_set():
        raise ProtocolError(f"SEAL refuses the parameters: {ctx.parameters_error_message()}")
    return ctx


def _scratch() -> tempfile.TemporaryDirectory:
    shm = Path("/dev/shm")
    where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    return tempfile.TemporaryDirectory(prefix="securediff-ckks-", dir=where)


class CkksContext:
    """The SEAL context of the agreed parameters, with or without the secret key.

    The aggregator's context is `CkksContext.public(params)`: built from the public
    parameters alone, it never sees key material (clients encrypt symmetrically
    with the shared secret key, so not even a public key is needed) and can only
    load and add ciphertexts.
    """

    def __init__(self, params: CkksParams, secret_key: seal.SecretKey | None) -> None:
        self.params = params
        self._ctx = _seal_context(params, None, expand=False)
        self._encoder = seal.CKKSEncoder(self._ctx)
        self._secret_key = secret_key
        self.scale = 2.0**params.scale_bits

    @classmethod
    def public(cls, params: CkksParams) -> CkksContext:
        return cls(params, None)

    @classmethod
    def from_key_seed(cls, params: CkksParams, key_seed: bytes) -> CkksContext:
        """The context holding the secret key that `key_seed` determines."""
        keygen = seal.KeyGenerator(_seal_context(params, key_seed, expand=False))
        return cls(params, keygen.secret_key())

    @property
    def has_secret_key(self) -> bool:
        return self._secret_key is not None

    def _require_key(self, what: str) -> seal.SecretKey:
        if self._secret_key is None:
            raise CkksKeyError(f"cannot {what}: this CKKS context holds no secret key")
        return self._secret_key

    # -- clients -----------------------------------------------------------------
    def encrypt(self, values: np.ndarray, *, random_bytes: RandomBytes) -> tuple[bytes, ...]:
        """Encrypt a float64 vector as ceil(len / N) seed-compressed ciphertexts."""
        key = self._require_key("encrypt")
        per = self.params.reals_per_ciphertext
        chunks = self.params.chunks(values.shape[0])
        padded = np.zeros(chunks * per, dtype=np.float64)
        padded[: values.shape[0]] = values
        slots = (padded[0::2] + 1j * padded[1::2]).reshape(chunks, per // 2)
        out = []
        with _scratch() as tmp:
            path = str(Path(tmp) / "ct")
            for row in slots:
                plain = seal.Plaintext()
                self._encoder.encode(row.tolist(), self.scale, plain)
                # 4.7 of the ~9 ms per ciphertext: the seeded context (see above).
                fresh = _seal_context(self.params, random_bytes(KEY_SEED_BYTES), expand=False)
                seal.Encryptor(fresh, key).encrypt_symmetric(plain).save(path)
                out.append(Path(path).read_bytes())
        return tuple(out)

    def decrypt(self, blobs: Sequence[bytes], *, length: int) -> np.ndarray:
        """Decode the first `length` reals of the ciphertexts (exact: no flooding here)."""
        self._require_key("decrypt")
        return self.decrypt_loaded(self.load(blobs), length=length)

    def decrypt_loaded(self, cts: Sequence[seal.Ciphertext], *, length: int) -> np.ndarray:
        """`decrypt` for ciphertexts already loaded (a sum this context added up)."""
        key = self._require_key("decrypt")
        decryptor = seal.Decryptor(self._ctx, key)
        parts = []
        for ct in cts:
            plain = seal.Plaintext()
            decryptor.decrypt(ct, plain)
            z = np.asarray(self._encoder.decode_complex(plain), dtype=np.complex128)
            part = np.empty(2 * z.shape[0], dtype=np.float64)
            part[0::2], part[1::2] = z.real, z.imag
            parts.append(part)
        return np.concatenate(parts)[:length]

    # -- aggregator --------------------------------------------------------------
    def load(self, blobs: Sequence[bytes]) -> list[seal.Ciphertext]:
        """Load and check ciphertexts: two polynomials in NTT form at the first data
        level, at the agreed scale. Anything else raises `CiphertextError`."""
        p = self.params
        limit = 2 * 2 * len(p.coeff_mod_bit_sizes) * p.poly_modulus_degree * 8 + 4096
        first = self._ctx.first_parms_id()
        out = []
        with _scratch() as tmp:
            path = str(Path(tmp) / "ct")
            for blob in blobs:
                if not isinstance(blob, bytes) or not _SEAL_HEADER_BYTES <= len(blob) <= limit:
                    raise CiphertextError("ciphertext blob of an impossible size")
                if int.from_bytes(blob[8:16], "little") != len(blob):  # SEALHeader.size
                    raise CiphertextError(
                        "ciphertext blob longer or shorter than its SEAL header says")
                Path(path).write_bytes(blob)
                ct = seal.Ciphertext()
                try:
                    ct.load(self._ctx, path)
                except (RuntimeError, ValueError, TypeError) as exc:
                    raise CiphertextError(f"ciphertext does not load: {exc}") from None
                if (
                    ct.size() != 2
                    or not ct.is_ntt_form()
                    or list(ct.parms_id()) != list(first)
                    or ct.scale != self.scale
                ):
                    raise CiphertextError(
                        "ciphertext is not a fresh encryption at the agreed scale")
                out.append(ct)
        return out

    def accumulate(
        self, total: list[seal.Ciphertext] | None, cts: list[seal.Ciphertext]
    ) -> list[seal.Ciphertext]:
        """`total + cts`, chunk by chunk, as new ciphertexts (no key needed)."""
        return self._combine(total, cts, subtract=False)

    def subtract(
        self, total: list[seal.Ciphertext], cts: list[seal.Ciphertext]
    ) -> list[seal.Ciphertext]:
        """`total - cts`: exact in the ring, so a late exclusion leaves no trace."""
        return self._combine(total, cts, subtract=True)

    def _combine(
        self, total: list[seal.Ciphertext] | None, cts: list[seal.Ciphertext], *, subtract: bool
    ) -> list[seal.Ciphertext]:
        if total is None:
            return list(cts)
        if len(total) != len(cts):
            raise CiphertextError("ciphertext lists of different lengths")
        evaluator = seal.Evaluator(self._ctx)
        out = []
        for a, b in zip(total, cts, strict=True):
            dest = seal.Ciphertext()
            (evaluator.sub if subtract else evaluator.add)(a, b, dest)
            out.append(dest)
        return out

    def save(self, cts: Sequence[seal.Ciphertext]) -> tuple[bytes, ...]:
        out = []
        with _scratch() as tmp:
            path = str(Path(tmp) / "ct")
            for ct in cts:
                ct.save(path)
                out.append(Path(path).read_bytes())
        return tuple(out)
