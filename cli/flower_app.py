"""The Flower App's entry point, and the only code besides cli/__init__.py that
`flwr run` bundles (pyproject.toml, `fab-include`).

Flower installs the bundle in every ClientApp process, one per message: a bundle
of securediff's 166 modules cost each process about 0.5 s of extracting,
hash-checking and deleting files on a loaded node (docs/performance.md), and it
made every node run the code of whoever submitted the run. With this entry point
each party imports securediff from its own installation, the one its operator
installed and reviewed, and the bundle a node must check is these two files.
"""

from securediff.flower.apps import client_app, server_app

__all__ = ["client_app", "server_app"]
