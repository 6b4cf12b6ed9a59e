"""The experiment suites: each method is one row of a table, each
(method, seed) cell a normal run directory plus a small result file, and a
report that aggregates the cells over seeds (see docs/RESULTS.md)."""
