"""A Flower deployment on 127.0.0.1, one process per SuperLink and SuperNode, for the
integration test (tests/flower/test_flower_secagg.py) and the loopback benchmark
(benchmarks/flower_loopback.py): free ports, processes in their own process groups
(killing one ends the SuperExec and ClientApp processes Flower starts under it), the
command lines of a SuperLink and of a securediff SuperNode, and the Flower config
that points `flwr run` at the SuperLink."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float) -> None:
    """Return once something listens on 127.0.0.1:`port`; TimeoutError after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on 127.0.0.1:{port}") from None
            time.sleep(0.5)


class Processes:
    """Named processes, each in its own process group, logging to `logs/<name>.log`."""

    def __init__(self, env: dict[str, str], logs: Path) -> None:
        self.env, self.logs, self.groups = env, logs, {}

    def start(self, name: str, cmd: list[str]) -> None:
        log = open(self.logs / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        self.groups[name] = subprocess.Popen(cmd, env=self.env, stdout=log,
                                             stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def kill(self, name: str) -> None:
        proc = self.groups.pop(name)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)

    def stop_all(self) -> None:
        for name in list(self.groups):
            self.kill(name)


def superlink_command(bin_dir: Path, port: int) -> list[str]:
    return [str(bin_dir / "flower-superlink"), "--insecure", "--host", "127.0.0.1", "--port",
            str(port), "--disable-runtime-dependency-installation"]


def supernode_command(bin_dir: Path, link_port: int, client_id: str, keys: Path) -> list[str]:
    """A SuperNode holding `client_id`'s identity key (`keys/<id>.key`) and the roster."""
    return [str(bin_dir / "flower-supernode"), "--insecure", "--superlink",
            f"127.0.0.1:{link_port}", "--port", str(free_port()), "--node-config",
            f"client-id='{client_id}' identity-key='{keys / (client_id + '.key')}' "
            f"roster='{keys / 'roster.json'}'"]


def write_flower_home(home: Path, link_port: int) -> None:
    """The Flower config (FLWR_HOME) whose default SuperLink is the local one."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "local"\n\n[superlink.local]\n'
        f'address = "127.0.0.1:{link_port}"\ninsecure = true\n')
