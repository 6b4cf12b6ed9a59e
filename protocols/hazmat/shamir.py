"""Shamir t-of-n secret sharing over GF(p), p = 2^521 - 1 (low level).

p is a Mersenne prime above 2^520, so any 256-bit secret (a mask seed, an
X25519 private key) is one field element and no chunking or padding is needed.
A share is the value of a random degree-(t-1) polynomial with constant term
the secret, at a public non-zero x (a party's index); any t shares give the
secret back by Lagrange interpolation at 0, fewer reveal nothing about it.

Polynomial coefficients are uniform field elements drawn from the caller's
`random_bytes` (521-bit candidates, rejection above p: no bias). Sharing many
secrets to the same shareholders is one call, and reconstruction reuses the
Lagrange weights of each distinct set of x values, which is where the time
goes when an aggregator recovers many secrets at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from protocols.errors import ProtocolError, ProtocolInputError

PRIME = (1 << 521) - 1
SHARE_BYTES = 66  # ceil(521 / 8): one field element, big-endian
SECRET_BYTES = 32
_CANDIDATE_MASK = PRIME  # 521 one-bits: mask a 66-byte draw down to 521 bits


class ShamirError(ProtocolError, ValueError):
    """Shares that cannot give a secret back (too few, repeated x, out of the field)."""


def secret_to_int(secret: bytes) -> int:
    if not isinstance(secret, bytes) or len(secret) != SECRET_BYTES:
        raise ProtocolInputError(f"a shared secret is exactly {SECRET_BYTES} bytes")
    return int.from_bytes(secret, "big")


def int_to_secret(value: int) -> bytes:
    if not 0 <= value < 1 << (8 * SECRET_BYTES):
        raise ShamirError("the reconstructed value is not a 32-byte secret (wrong shares?)")
    return value.to_bytes(SECRET_BYTES, "big")


def encode_share(y: int) -> bytes:
    return y.to_bytes(SHARE_BYTES, "big")


def decode_share(data: bytes) -> int:
    if len(data) != SHARE_BYTES:
        raise ShamirError(f"a share is {SHARE_BYTES} bytes")
    y = int.from_bytes(data, "big")
    if y >= PRIME:
        raise ShamirError("share value outside the field")
    return y


def _field_elements(random_bytes: Callable[[int], bytes], count: int) -> list[int]:
    out: list[int] = []
    while len(out) < count:
        need = count - len(out)
        raw = random_bytes(SHARE_BYTES * need)
        for i in range(need):
            c = int.from_bytes(raw[i * SHARE_BYTES : (i + 1) * SHARE_BYTES], "big") & _CANDIDATE_MASK
            if c < PRIME:  # rejects only c == p: probability 2^-521
                out.append(c)
    return out


def _check_xs(xs: Sequence[int]) -> None:
    if not xs or len(set(xs)) != len(xs) or not all(type(x) is int and 0 < x < PRIME for x in xs):
        raise ProtocolInputError("share points must be distinct ints in [1, p)")


def split(
    secrets: Sequence[bytes],
    *,
    threshold: int,
    xs: Sequence[int],
    random_bytes: Callable[[int], bytes],
) -> list[list[int]]:
    """Share each secret among the points `xs`: result[s][j] is secret s's share at xs[j]."""
    _check_xs(xs)
    if type(threshold) is not int or not 1 <= threshold <= len(xs):
        raise ProtocolInputError(f"threshold must be in [1, {len(xs)}], got {threshold!r}")
    values = [secret_to_int(s) for s in secrets]
    coeffs = _field_elements(random_bytes, len(values) * (threshold - 1))
    out = []
    for s, a0 in enumerate(values):
        poly = coeffs[s * (threshold - 1) : (s + 1) * (threshold - 1)]
        row = []
        for x in xs:
            acc = 0
            for a in reversed(poly):  # Horner, highest degree first
                acc = (acc + a) * x % PRIME
            row.append((acc + a0) % PRIME)
        out.append(row)
    return out


def lagrange_at_zero(xs: Sequence[int]) -> list[int]:
    """Weights w_j with f(0) = sum_j w_j f(x_j) for any polynomial of degree < len(xs).

    One modular inversion for all the weights (Montgomery's batch trick)."""
    _check_xs(xs)
    nums, dens = [], []
    for i, xi in enumerate(xs):
        num = den = 1
        for j, xj in enumerate(xs):
            if i != j:
                num = num * xj % PRIME
                den = den * (xj - xi) % PRIME
        nums.append(num)
        dens.append(den)
    prefix = [1]
    for d in dens:
        prefix.append(prefix[-1] * d % PRIME)
    inv = pow(prefix[-1], -1, PRIME)  # extended Euclid: ~10x faster than Fermat's p - 2 power
    weights = [0] * len(xs)
    for i in range(len(xs) - 1, -1, -1):
        weights[i] = nums[i] * inv * prefix[i] % PRIME
        inv = inv * dens[i] % PRIME
    return weights


def reconstruct_many(
    share_sets: Mapping[str, Iterable[tuple[int, int]]], *, threshold: int
) -> dict[str, bytes]:
    """Recover each named secret from any `threshold` of its (x, y) shares.

    Uses the `threshold` shares with the smallest x (any t of a consistent set
    give the same secret); fewer than t, or a repeated x, raises `ShamirError`.
    """
    cache: dict[tuple[int, ...], list[int]] = {}
    out = {}
    for name, shares in share_sets.items():
        points = sorted(shares)
        xs = [x for x, _ in points]
        if len(set(xs)) != len(xs):
            raise ShamirError(f"{name}: two shares at the same point")
        if len(points) < threshold:
            raise ShamirError(f"{name}: {len(points)} shares, {threshold} needed")
        use = points[:threshold]
        key = tuple(x for x, _ in use)
        weights = cache.get(key)
        if weights is None:
            weights = cache[key] = lagrange_at_zero(key)
        value = sum(w * y for w, (_, y) in zip(weights, use, strict=True)) % PRIME
        out[name] = int_to_secret(value)
    return out


def reconstruct(shares: Iterable[tuple[int, int]], *, threshold: int) -> bytes:
    return reconstruct_many({"secret": shares}, threshold=threshold)["secret"]
