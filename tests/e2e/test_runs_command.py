"""`securediff runs` tells running, unfinished, finished and corrupt runs apart,
and `train --discard NAME` removes an unfinished run after confirmation only."""

from __future__ import annotations

import json
import shutil

from typer.testing import CliRunner

from cli.app import app
from securediff.locks import DirectoryLock

from .conftest import TINY

cli = CliRunner()


def test_runs_lists_each_state_and_discard_removes_only_an_unfinished_run(tmp_path):
    out = tmp_path / "runs"
    done = cli.invoke(app, ["train", "--insecure-deterministic", "1", "--run.name", "done",
                            "--run.out_dir", str(out), "--json", *TINY])
    assert done.exit_code == 0, done.output
    shutil.copytree(out / "done", out / "broken")
    ledger = out / "broken" / "ledger.json"
    ledger.write_text(ledger.read_text().replace('"events"', '"events" ', 1))
    shutil.copytree(out / "done", out / "left.incomplete")
    shutil.copytree(out / "done", out / "busy.incomplete")
    held = DirectoryLock.acquire(out / "busy.incomplete")
    try:
        listed = cli.invoke(app, ["runs", str(out), "--json"])
        assert listed.exit_code == 0, listed.output
        states = {r["name"]: r for r in json.loads(listed.output)["runs"]}
        assert {n: r["state"] for n, r in states.items()} == {
            "done": "finished", "broken": "corrupt", "left": "unfinished", "busy": "running"}
        assert states["done"]["epsilon"] is not None and "ledger.json" in states["broken"]["detail"]
        assert "process" in states["busy"]["detail"]
        table = cli.invoke(app, ["runs", str(out)])
        assert table.exit_code == 0 and all(name in table.output for name in states)

        busy = cli.invoke(app, ["train", "--discard", "busy", "--yes", "--run.out_dir", str(out)])
        assert busy.exit_code == 3 and "in use" in busy.output
    finally:
        held.release()

    for answer in ("", "n\n"):  # no answer, or no
        kept = cli.invoke(app, ["train", "--discard", "left", "--run.out_dir", str(out)], input=answer)
        assert kept.exit_code == 2 and "--yes" in kept.output and (out / "left.incomplete").exists()
    finished = cli.invoke(app, ["train", "--discard", "done", "--yes", "--run.out_dir", str(out)])
    assert finished.exit_code == 3 and (out / "done").exists()
    removed = cli.invoke(app, ["train", "--discard", "left", "--run.out_dir", str(out)], input="y\n")
    assert removed.exit_code == 0, removed.output
    assert not (out / "left.incomplete").exists()
    shutil.copytree(out / "done", out / "again.incomplete")
    assert cli.invoke(app, ["train", "--discard", "again", "--yes", "--run.out_dir", str(out)]).exit_code == 0
    assert not (out / "again.incomplete").exists()
