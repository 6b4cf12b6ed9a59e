"""Coverage-guided fuzzing (atheris, libFuzzer) of the protocol message decoder.

Not collected by pytest; `make fuzz` runs it after the Hypothesis fuzzer when
atheris installs. The seed corpus is one message of every type of every
protocol (the same corpus as test_fuzz_protocol_messages.py). Anything the
decoder accepts must be in its one canonical form; anything else must be
refused with MessageDecodeError.

    .venv/bin/python tests/protocols/atheris_messages.py -runs=1000000
"""

from __future__ import annotations

import importlib.util
import sys
import tempfile
from pathlib import Path

import atheris

with atheris.instrument_imports(include=["protocols"]):
    from protocols.errors import MessageDecodeError
    from protocols.messages import decode, encode


def one_input(data: bytes) -> None:
    try:
        msg = decode(data)
    except MessageDecodeError:
        return
    if encode(msg) != data:
        raise AssertionError("the decoder accepted a non-canonical encoding")


def _seed_corpus(directory: Path) -> None:
    here = Path(__file__).with_name("test_fuzz_protocol_messages.py")
    spec = importlib.util.spec_from_file_location("fuzz_corpus", here)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    for i, raw in enumerate(module.CORPUS):
        (directory / f"seed-{i:02d}").write_bytes(raw)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="securediff-atheris-") as corpus:
        _seed_corpus(Path(corpus))
        atheris.Setup([sys.argv[0], *sys.argv[1:], corpus], one_input)
        atheris.Fuzz()
