import pytest
import torch

from securediff.errors import CheckpointError, RunDirectoryError
from securediff.storage import (
    RunDirectory,
    atomic_write_json,
    load_tensors,
    read_json,
    save_tensors,
)


def test_tensors_round_trip_with_digest(tmp_path):
    path = tmp_path / "a.safetensors"
    digest = save_tensors(path, {"w": torch.arange(6.0).view(2, 3)})
    assert torch.equal(load_tensors(path, expected_sha256=digest)["w"], torch.arange(6.0).view(2, 3))


def test_corrupt_or_edited_checkpoints_are_refused(tmp_path):
    path = tmp_path / "a.safetensors"
    digest = save_tensors(path, {"w": torch.ones(4)})
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="digest"):
        load_tensors(path, expected_sha256=digest)
    path.write_bytes(b"\x00\x01garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_tensors(path)
    with pytest.raises(CheckpointError):
        load_tensors(tmp_path / "missing.safetensors")


def test_pickles_are_not_loaded(tmp_path):
    path = tmp_path / "evil.safetensors"
    torch.save({"w": torch.ones(2)}, path)  # a pickle, not safetensors
    with pytest.raises(CheckpointError):
        load_tensors(path)


def test_run_directory_is_staged_until_finalized(tmp_path):
    run = RunDirectory.create(tmp_path, "r")
    assert run.path.name == "r.incomplete"
    atomic_write_json(run.file("x.json"), {"a": 1})
    with pytest.raises(RunDirectoryError):
        RunDirectory.create(tmp_path, "r")
    reopened = RunDirectory.open_incomplete(tmp_path / "r")
    assert reopened.path == run.path
    final = run.finalize()
    assert final == tmp_path / "r" and read_json(final / "x.json") == {"a": 1}
    assert not (tmp_path / "r.incomplete").exists()
    with pytest.raises(RunDirectoryError):
        RunDirectory.create(tmp_path, "r")


def test_read_json_errors(tmp_path):
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(CheckpointError):
        read_json(tmp_path / "bad.json")
