"""The search every noise calibration runs: the smallest noise whose epsilon is at
most a target, to a relative tolerance, returning the safe (upper) end.

Each epsilon is an accountant call (a PLD build can take a second), so the
search spends as few as it can. Epsilon falls smoothly as the noise grows, close
to a straight line in log-log, so the next guess is the secant there through the
last two points, kept inside the bracket; once it sits next to the last point,
it aims a quarter tolerance past the root so that the call closes the bracket.
Two guesses in a row that do not halve the bracket are followed by a bisection
step, so the search stays within a small factor of bisection at worst. Only the
bracket's invariant is relied on (epsilon(lo) > target >= epsilon(hi), each
checked by a call), never the interpolation: the value returned always had its
epsilon computed and found at most the target.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from securediff.errors import ConfigError

MAX_NOISE = 1e4
MIN_NOISE = 1e-3


def smallest_safe_noise(epsilon: Callable[[float], float], *, target: float, rel_tol: float,
                        start: float, what: str) -> float:
    """The smallest noise z (to `rel_tol` of z) with epsilon(z) <= target, searched
    from the bracket [start / 2, start]; `what` names the mechanism in the error
    raised when no noise up to MAX_NOISE reaches the target."""
    if not (target > 0.0 and math.isfinite(target)):
        raise ConfigError(f"target_epsilon must be positive and finite, got {target}")
    lo, hi = start / 2.0, start
    e_lo, e_hi = math.nan, epsilon(hi)  # nan: not computed yet
    while e_hi > target:
        lo, e_lo, hi = hi, e_hi, 2.0 * hi
        if hi > MAX_NOISE:
            raise ConfigError(f"no noise multiplier up to 1e4 reaches epsilon {target} ({what})")
        e_hi = epsilon(hi)
    if math.isnan(e_lo):
        e_lo = epsilon(lo)
    while lo > MIN_NOISE and e_lo <= target:
        hi, e_hi = lo, e_lo
        lo = lo / 2.0
        e_lo = epsilon(lo)
    if e_lo <= target:  # even the least noise searched meets the target
        return lo

    history = [(lo, e_lo), (hi, e_hi)]

    def settle(z: float) -> None:
        """Ask the accountant at z and move the bracket's end on z's side there."""
        nonlocal lo, hi
        e = epsilon(z)
        lo, hi = (z, hi) if e > target else (lo, z)
        history.append((z, e))

    stalled = 0
    while hi - lo > rel_tol * hi:
        width = hi - lo
        (z1, e1), (z2, e2) = history[-2:]
        guess = _log_log_guess(z1, e1, z2, e2, target)
        if guess is None or not lo < guess < hi:
            guess = 0.5 * (lo + hi)
        elif abs(guess - z2) < 0.5 * rel_tol * guess:
            # The estimate sits next to the last point: aim a quarter tolerance past
            # it, on the side that point is not on, so this call closes the bracket.
            aimed = guess * (1.0 + 0.25 * rel_tol) if e2 > target else guess * (1.0 - 0.25 * rel_tol)
            guess = aimed if lo < aimed < hi else guess
        settle(guess)
        stalled = stalled + 1 if hi - lo > 0.5 * width else 0
        if stalled >= 2 and hi - lo > rel_tol * hi:  # the guesses stopped paying: bisect once
            settle(0.5 * (lo + hi))
            stalled = 0
    return hi


def _log_log_guess(z1: float, e1: float, z2: float, e2: float, target: float) -> float | None:
    """Where the line through (log z1, log e1) and (log z2, log e2) reaches log
    target; None where that line is not defined."""
    if not (math.isfinite(e1) and math.isfinite(e2) and e1 > 0.0 and e2 > 0.0 and e1 != e2 and z1 != z2):
        return None
    t = (math.log(e1) - math.log(target)) / (math.log(e1) - math.log(e2))
    guess = math.log(z1) + t * (math.log(z2) - math.log(z1))
    return math.exp(guess) if abs(guess) < 700.0 else None
