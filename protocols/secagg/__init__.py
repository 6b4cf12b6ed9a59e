"""Secure aggregation by pairwise masking (Bonawitz et al. 2017) over the SecAgg+
neighbour graph (Bell et al. 2020). `SecAggProtocol` is registered as "secagg"."""

from protocols.secagg.params import GraphPlan, SecAggParams, plan_graph
from protocols.secagg.protocol import SecAggProtocol

__all__ = ["GraphPlan", "SecAggParams", "SecAggProtocol", "plan_graph"]
