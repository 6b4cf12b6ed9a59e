"""CKKS parameters: the public numbers every party and the aggregator agree on.

Defaults: ring dimension N = 8192, coefficient moduli of 60, 60, 60 and 38 bits
(218 bits: the largest modulus the HomomorphicEncryption.org standard allows at
N = 8192 for 128-bit classical security with a ternary secret, which SEAL
enforces), scale 2^100. The aggregator only adds ciphertexts (clients weight
their own vectors; the weights are public), so no level is ever consumed: the
whole 180-bit data modulus is available, and the large scale leaves room for
noise flooding (see `flood_sigma`) that costs nothing measurable in precision.
Each ciphertext packs N reals, two per complex slot.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from protocols.errors import ProtocolInputError

# SEAL samples fresh encryption errors from a centered binomial distribution of
# standard deviation 3.2 supported on [-21, 21] (SEAL >= 3.6; the clipped
# Gaussian of older builds is bounded by 19.2). A sum of n fresh ciphertexts
# therefore has a decryption error of at most 21 n per coefficient.
FRESH_ERROR_BOUND = 21
# The largest total coefficient modulus SEAL accepts at 128-bit security.
MAX_MODULUS_BITS = {4096: 109, 8192: 218, 16384: 438, 32768: 881}
# Headroom kept above the largest encoded value: up to 2^10 contributors and
# the sqrt(2) between slot and coefficient magnitudes.
_HEADROOM_BITS = 12
_MAX_VALUE_BITS = 40


def _int_list(name: str, value: Any) -> tuple[int, ...]:
    if isinstance(value, str):  # --protocol.coeff_mod_bit_sizes 60,60,60,38
        value = [v for v in value.replace("[", "").replace("]", "").split(",") if v.strip()]
    if not isinstance(value, list | tuple) or not value:
        raise ProtocolInputError(f"{name} must be a non-empty list of integers")
    out = []
    for v in value:
        try:
            iv = int(v)
        except (TypeError, ValueError):
            raise ProtocolInputError(f"{name} must be a list of integers, got {value!r}") from None
        if isinstance(v, bool) or (isinstance(v, float) and v != iv):
            raise ProtocolInputError(f"{name} must be a list of integers, got {value!r}")
        out.append(iv)
    return tuple(out)


def _int(name: str, value: Any, lo: int, hi: int) -> int:
    if type(value) is not int or not lo <= value <= hi:
        raise ProtocolInputError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


@dataclass(frozen=True)
class CkksParams:
    """Validated CKKS parameters (see the module docstring for the defaults)."""

    poly_modulus_degree: int = 8192
    coeff_mod_bit_sizes: tuple[int, ...] = (60, 60, 60, 38)
    scale_bits: int = 100
    flood_bits: int = 40
    decryptors: int = 2

    def __post_init__(self) -> None:
        bits = _int_list("coeff_mod_bit_sizes", self.coeff_mod_bit_sizes)
        object.__setattr__(self, "coeff_mod_bit_sizes", bits)
        n = self.poly_modulus_degree
        if type(n) is not int or n not in MAX_MODULUS_BITS:
            raise ProtocolInputError(
                f"poly_modulus_degree must be one of {sorted(MAX_MODULUS_BITS)}, got {n!r}"
            )
        if len(bits) < 2 or not all(20 <= b <= 60 for b in bits):
            raise ProtocolInputError(
                "coeff_mod_bit_sizes needs at least two primes (the last is SEAL's special "
                "prime) of 20 to 60 bits each"
            )
        if sum(bits) > MAX_MODULUS_BITS[n]:
            raise ProtocolInputError(
                f"coeff_mod_bit_sizes total {sum(bits)} bits: above {MAX_MODULUS_BITS[n]}, "
                f"the 128-bit-security limit at N={n}"
            )
        _int("scale_bits", self.scale_bits, 20, 200)
        _int("flood_bits", self.flood_bits, 0, 128)
        _int("decryptors", self.decryptors, 1, 16)
        if self.value_bits < 1:
            raise ProtocolInputError(
                f"scale_bits {self.scale_bits} leaves no room for values under a "
                f"{self.data_bits}-bit data modulus"
            )

    @property
    def data_bits(self) -> int:
        """Bits of the modulus fresh ciphertexts live under (all but the special prime)."""
        return sum(self.coeff_mod_bit_sizes[:-1])

    @property
    def value_bits(self) -> int:
        """Each client's weighted values must stay below 2^value_bits in magnitude."""
        return min(_MAX_VALUE_BITS, self.data_bits - self.scale_bits - _HEADROOM_BITS)

    @property
    def max_abs(self) -> float:
        return float(2**self.value_bits)

    @property
    def reals_per_ciphertext(self) -> int:
        """N/2 complex slots, each carrying two reals."""
        return self.poly_modulus_degree

    def chunks(self, length: int) -> int:
        return max(1, math.ceil(length / self.reals_per_ciphertext))

    def flood_sigma(self, clients: int) -> float:
        """Std of the Gaussian each decryptor adds to every released real.

        Adding iid N(0, s^2) to the real and imaginary part of all N/2 slots is,
        in distribution, adding iid N(0, tau^2) to the N coefficients of the
        decrypted polynomial with tau = s * Delta / sqrt(N/2) (the canonical
        embedding is sqrt(N/2) times an orthogonal map). The error to hide, e, has
        |e_i| <= B = 21 n for a sum of at most n = `clients` fresh ciphertexts. Over k
        decryptions of one ciphertext the KL divergence
        between the views with and without e is at most k N B^2 / (2 tau^2), so by
        Pinsker the statistical distance is at most sqrt(k N) B / (2 tau). Setting
        that to 2^-flood_bits gives s = 2^flood_bits N sqrt(k/2) B / (2 Delta).
        """
        bound = FRESH_ERROR_BOUND * max(1, clients)
        n = self.poly_modulus_degree
        return (
            2.0**self.flood_bits * n * math.sqrt(self.decryptors / 2) * bound
            / (2 * 2.0**self.scale_bits)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "poly_modulus_degree": self.poly_modulus_degree,
            "coeff_mod_bit_sizes": list(self.coeff_mod_bit_sizes),
            "scale_bits": self.scale_bits,
            "flood_bits": self.flood_bits,
            "decryptors": self.decryptors,
        }
