"""What a node accepts of the protocol parameters the aggregator sends.

In process one config sets the protocol for every party. Across machines the
aggregator names the protocol and its parameters in each round's set-up, so a
node must not let those parameters decide its own security checks: an
aggregator could otherwise allowlist its own enclave code (tee), switch CKKS
noise flooding off, or release sums of a single client. A node therefore

- takes part only in the protocols its node config lists (`protocols`, default
  every protocol; a node may leave out `plain`, which shows its update);
- refuses a round whose minimum number of survivors (ckks, tee) is below its
  own `min-survivors` (default 2, the protocols' default);
- refuses ckks rounds whose flooding is weaker than `ckks-min-flood-bits`
  (default 40, the protocol's default: statistical distance 2^-40);
- verifies tee quotes against its OWN attestation policy: the allowlist
  `tee-allow` (comma-separated SHA-384 measurements; default: the measurement
  of the aggregator code this node itself runs, which `securediff tee measure`
  prints), `tee-min-svn` (default 1) and `tee-production` (default false:
  refuse every simulated quote when true). The aggregator's `allow`,
  `min_svn` and `production` parameters are ignored by the node;
- assumes the aggregator of `threat-model`: `active` (the default: DESIGN.md's
  threat model, an aggregator that may drop, forge and equivocate, and with
  which a minority of clients may collude) or `honest-but-curious` (it follows
  the protocol and no client colludes with it). Under `active`, and whenever
  `collusion-fraction` is above 0, the node refuses ckks: every client holds
  the round's one secret key, so an aggregator colluding with any one client
  reads every ciphertext, whatever the protocol signs;
- refuses secagg rounds below its own minimums (`secagg_policy.py`): the
  consistency round on (unless `allow-no-consistency-check`, which needs
  `threat-model = honest-but-curious`), degree and threshold at least the plan
  of the documented analysis for the round's n under the node's
  `collusion-fraction` (default 0) and `secagg-security-bits` (default 40),
  and `min_contributors` at least its `min-contributors` (default 0).

Every refusal is a `ProtocolAbort` that names the parameter.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocols.errors import ProtocolAbort
from protocols.registry import protocol_names
from protocols.stages import AggregationProtocol
from securediff.errors import ConfigError
from securediff.flower.secagg_policy import SecAggMinimums

THREAT_MODELS = ("active", "honest-but-curious")


@dataclass(frozen=True)
class NodePolicy:
    protocols: tuple[str, ...] = protocol_names()
    min_survivors: int = 2
    ckks_min_flood_bits: int = 40
    tee_allow: tuple[str, ...] | None = None  # None: this node's own measurement
    tee_min_svn: int = 1
    tee_production: bool = False
    # The attestation root this node trusts (PEM text of `tee-root`, a file path in the
    # node config); None: the public simulated root, whose quotes anyone can mint.
    tee_root: str | None = None
    # Cautious by default: DESIGN.md lets the aggregator be active.
    threat_model: str = "active"
    secagg: SecAggMinimums = field(default_factory=SecAggMinimums)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.protocols) - set(protocol_names()))
        if unknown or not self.protocols:
            raise ConfigError(f"node config protocols: unknown {unknown} (known: "
                              f"{', '.join(protocol_names())})")
        if self.min_survivors < 1:
            raise ConfigError("node config min-survivors must be >= 1")
        if self.threat_model not in THREAT_MODELS:
            raise ConfigError(f"node config threat-model must be one of {', '.join(THREAT_MODELS)}")
        if self.threat_model == "active" and not self.secagg.require_consistency_check:
            # Without the signed survivor lists an active aggregator can equivocate.
            raise ConfigError("node config allow-no-consistency-check needs "
                              "threat-model = honest-but-curious")

    @classmethod
    def from_node_config(cls, node_config: Mapping[str, Any]) -> NodePolicy:
        try:
            names = node_config.get("protocols")
            protocols = (tuple(p.strip() for p in str(names).split(",") if p.strip())
                         if names else protocol_names())
            secagg = SecAggMinimums(
                require_consistency_check=not _flag(
                    node_config.get("allow-no-consistency-check", False)),
                collusion_fraction=float(node_config.get("collusion-fraction", 0.0)),
                security_bits=int(node_config.get("secagg-security-bits", 40)),
                min_contributors=int(node_config.get("min-contributors", 0)),
            )
            return cls(
                protocols=protocols,
                min_survivors=int(node_config.get("min-survivors", 2)),
                ckks_min_flood_bits=int(node_config.get("ckks-min-flood-bits", 40)),
                tee_allow=_tee_allowlist(node_config.get("tee-allow") or None),
                tee_min_svn=int(node_config.get("tee-min-svn", 1)),
                tee_production=_flag(node_config.get("tee-production", False)),
                tee_root=_read_root(node_config.get("tee-root") or None),
                threat_model=str(node_config.get("threat-model", "active")),
                secagg=secagg,
            )
        except ConfigError:
            raise
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"node config: bad protocol policy ({exc})") from None

    def apply(self, client_id: str, protocol: AggregationProtocol, *,
              participants: int) -> AggregationProtocol:
        """`protocol` (built from the aggregator's parameters) with this node's checks
        in place, for a round of `participants` clients; `ProtocolAbort` if its
        parameters are weaker than the node accepts."""
        name = protocol.name
        if name not in self.protocols:
            raise ProtocolAbort(f"{client_id}: this node does not take part in {name} rounds "
                                f"(node config protocols = {','.join(self.protocols)})")
        # plain shows every update anyway; secagg's threshold comes from its own analysis.
        survivors = protocol.min_survivors if name in ("ckks", "tee") else None
        if survivors is not None and survivors < self.min_survivors:
            raise ProtocolAbort(f"{client_id}: {name} with min_survivors = {survivors}, below "
                                f"this node's min-survivors = {self.min_survivors}")
        if name == "secagg":
            why = self.secagg.refusal(protocol.config, participants)
            if why is not None:
                raise ProtocolAbort(f"{client_id}: secagg round refused, {why}")
        if name == "ckks":
            self._check_ckks(client_id, protocol)
        if name == "tee":
            from protocols.tee.verify import AttestationPolicy

            # The measurement the node computes from its own copy of the aggregator
            # code, not whatever the aggregator allowlists for itself.
            # Its own root too: under a real root the simulated enclave's quotes are
            # refused, whatever root the aggregator names.
            root = {} if self.tee_root is None else {"trusted_root": _root_cert(self.tee_root)}
            protocol.policy = AttestationPolicy(
                allowed_measurements=self.tee_allow or (protocol.measurement,),
                min_svn=self.tee_min_svn, production=self.tee_production, **root)
        return protocol

    def _check_ckks(self, client_id: str, protocol: AggregationProtocol) -> None:
        # Every client holds the round's one secret key: a single client colluding with
        # the aggregator hands it every other client's update.
        if self.threat_model != "honest-but-curious":
            raise ProtocolAbort(f"{client_id}: ckks refused under this node's threat-model = "
                                f"{self.threat_model}: single-key ckks holds only against an "
                                "honest-but-curious aggregator that no client colludes with")
        if self.secagg.collusion_fraction > 0:
            raise ProtocolAbort(f"{client_id}: ckks refused under this node's collusion-fraction "
                                f"= {self.secagg.collusion_fraction}: a colluding client holds "
                                "the round's secret key")
        if protocol.ckks.flood_bits < self.ckks_min_flood_bits:
            raise ProtocolAbort(f"{client_id}: ckks flooding of {protocol.ckks.flood_bits} bits, "
                                f"below this node's ckks-min-flood-bits = "
                                f"{self.ckks_min_flood_bits}")


def _read_root(path: Any) -> str | None:
    if path is None:
        return None
    try:
        text = Path(str(path)).read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"node config tee-root: cannot read {path}: {exc}") from None
    _root_cert(text)  # refuse a file that is not a certificate at start-up
    return text


def _root_cert(pem: str):
    from protocols.errors import ProtocolInputError
    from protocols.tee.protocol import _root

    try:
        return _root(pem)
    except ProtocolInputError as exc:
        raise ConfigError(f"node config tee-root: {exc}") from None


def _tee_allowlist(value: Any) -> tuple[str, ...] | None:
    # Imported only when set: every ClientApp process (one per message) reads the node
    # policy, and loading tee (with its X.509 code) cost each about 50 ms of CPU.
    if value is None:
        return None
    from protocols.tee.protocol import _allowlist

    return _allowlist(value)


def _flag(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false", "1", "0"):
        raise ValueError(f"expected true or false, got {value!r}")
    return text in ("true", "1")
