"""The words every output that names a tee round carries (train summary, privacy
statement, `transcript show`, `tee verify`): the enclave is software that the
aggregator's operator runs, and the simulated root's private key is public, so
anyone (that operator first) can mint a quote that verifies under it.

A module of its own so that the package's own modules (the protocol) import it
without importing the package circularly; everyone else takes it from
`protocols.tee`."""

SIMULATED_NOTICE = "simulated: no confidentiality against the operator of the aggregator"
