import pytest
import torch

from securediff.errors import CheckpointError, RunDirectoryError
from securediff.storage import (
    RunDirectory,
    atomic_write_json,
    load_tensors,
    read_json,
    resolve_committed,
    save_tensors,
    staged_path,
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
    with pytest.raises(RunDirectoryError, match="in use by process"):
        RunDirectory.open_incomplete(tmp_path / "r")  # the first writer still holds it
    run.release()
    reopened = RunDirectory.open_incomplete(tmp_path / "r")
    assert reopened.path == run.path
    final = reopened.finalize()
    assert final == tmp_path / "r" and read_json(final / "x.json") == {"a": 1}
    assert not (tmp_path / "r.incomplete").exists()
    with pytest.raises(RunDirectoryError):
        RunDirectory.create(tmp_path, "r")


def test_read_json_errors(tmp_path):
    (tmp_path / "bad.json").write_text("{nope")
    with pytest.raises(CheckpointError):
        read_json(tmp_path / "bad.json")


# -- a checkpoint and the progress file that commits its digest ------------------------

def _stage(path, value: float) -> str:
    return save_tensors(staged_path(path), {"w": torch.full((3,), value)})


def test_a_staged_checkpoint_is_not_current_until_its_digest_is_committed(tmp_path):
    path = tmp_path / "state.safetensors"
    old = save_tensors(path, {"w": torch.zeros(3)})
    _stage(path, 1.0)  # died before progress.json recorded the new digest
    assert resolve_committed(path, old, roll_forward=True) == path
    assert load_tensors(path, expected_sha256=old)["w"].eq(0).all()


def test_a_committed_checkpoint_is_found_when_the_promotion_did_not_happen(tmp_path):
    path = tmp_path / "state.safetensors"
    save_tensors(path, {"w": torch.zeros(3)})
    new = _stage(path, 1.0)  # progress.json recorded `new`; died before the promotion
    reader = resolve_committed(path, new, roll_forward=False)
    assert reader == staged_path(path) and load_tensors(reader, expected_sha256=new)["w"].eq(1).all()
    assert load_tensors(path)["w"].eq(0).all()  # a reader leaves the directory alone
    assert resolve_committed(path, new, roll_forward=True) == path
    assert not staged_path(path).exists()
    assert load_tensors(path, expected_sha256=new)["w"].eq(1).all()


def test_no_version_with_the_committed_digest_is_reported_by_the_load(tmp_path):
    path = tmp_path / "state.safetensors"
    save_tensors(path, {"w": torch.zeros(3)})
    _stage(path, 1.0)
    assert resolve_committed(path, "0" * 64, roll_forward=True) == path
    with pytest.raises(CheckpointError, match="does not match the digest"):
        load_tensors(path, expected_sha256="0" * 64)
