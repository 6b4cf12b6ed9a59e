"""What every party of a round derives from the public set-up: the graph plan,
the fixed-point encoding and the ring. Computed identically by the aggregator,
each client and a transcript auditor."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from protocols.hazmat.quantize import EXTRA_COORDINATES, FixedPoint, Ring, plan_ring
from protocols.messages import canonical_json, sha256_hex
from protocols.secagg.params import GraphPlan, SecAggParams, plan_graph


@dataclass(frozen=True)
class RoundContext:
    round_index: int
    n: int
    plan: GraphPlan
    fixed: FixedPoint
    ring: Ring
    dtype: str
    integer: bool
    length: int  # the vector length plus the weight and clipped-count coordinates
    min_contributors: int = 0  # distributed DP's noise floor (SecAggParams)
    colluders: int = 0  # clients assumed to collude with the aggregator (collusion_fraction)
    params_digest: str = ""  # SHA-256 of the parameters, the round's shape and its binding

    @property
    def threshold(self) -> int:
        return self.plan.threshold

    @property
    def vector_length(self) -> int:
        return self.length - EXTRA_COORDINATES


def round_context(
    *, params: SecAggParams, round_index: int, n: int, length: int, dtype: str,
    binding: str = "",
) -> RoundContext:
    fixed = params.fixed
    return RoundContext(
        round_index=round_index,
        n=n,
        plan=plan_graph(n, params),
        fixed=fixed,
        ring=plan_ring(fixed=fixed, n=n, length=length),
        dtype=dtype,
        integer=dtype == "int64",
        length=length + EXTRA_COORDINATES,
        min_contributors=params.min_contributors,
        colluders=math.ceil(params.collusion_fraction * n),
        params_digest=sha256_hex(canonical_json({
            "params": {f.name: getattr(params, f.name) for f in dataclasses.fields(params)},
            "n": n, "length": length, "dtype": dtype, "binding": binding})),
    )
