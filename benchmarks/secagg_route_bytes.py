"""Bytes of secagg's RouteKeys per client, at the default degree, in a bound round.

    .venv/bin/python benchmarks/secagg_route_bytes.py 50 100 200 1000

Drives the clients' adverts, the aggregator's `receive_keys` and `route_keys`
(no masking, no later stage) and prints, per n, the graph degree k and the
mean and largest encoded RouteKeys a client is sent. Ids are `client-NNNN`.
"""

from __future__ import annotations

import os
import statistics
import sys

import numpy as np

from protocols.messages import encode
from protocols.roster import Identities
from protocols.secagg import SecAggProtocol, client
from protocols.secagg import server as srv
from protocols.stages import ClientInput, make_setup


def route_bytes(n: int) -> tuple[int, list[int]]:
    ids = Identities.generate([f"client-{i:04d}" for i in range(n)])
    protocol = SecAggProtocol().bind(ids)
    spec = ClientInput(vector=np.zeros(4), weight=1.0).spec
    setup = make_setup(protocol, round_index=0, aggregator_id=ids.aggregator_id,
                       participants=ids.client_ids, vector=spec)
    ctx = protocol._context(setup)
    adverts = []
    for c in ids.client_ids:
        state = protocol.client_start(setup=setup, client_id=c,
                                      client_input=ClientInput(vector=np.zeros(4), weight=1.0),
                                      random_bytes=os.urandom)
        adverts.append(client.advertise(state.data, ids, ids.aggregator_id))
    data, _ = srv.receive_keys(srv.ServerData(ctx=ctx), adverts, ids.roster())
    _, out = srv.route_keys(data, ids.client_ids, ids.aggregator_id)
    return ctx.plan.degree, [len(encode(m)) for m in out]


def main(argv: list[str]) -> None:
    for n in map(int, argv or ["50", "100", "200", "1000"]):
        k, sizes = route_bytes(n)
        print(f"n={n} k={k} RouteKeys bytes per client: mean {statistics.mean(sizes):.0f} "
              f"max {max(sizes)}")


if __name__ == "__main__":
    main(sys.argv[1:])
