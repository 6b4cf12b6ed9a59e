"""FederatedRun.checkpoint_hooks, the seam crash tests use: every checkpoint
passes its four points in order, and at each the files on disk are what a kill
there would leave."""

from __future__ import annotations

from securediff.federation.runner import FederatedRun
from securediff.federation.setup import set_up_run
from securediff.run import load_config
from securediff.storage import RunDirectory, read_json

from .test_rounds import SMALL

POINTS = ["before", "staged", "committed", "after"]


def test_every_checkpoint_passes_its_points_in_order_with_the_files_a_kill_would_leave(tmp_path):
    config = load_config(None, {**SMALL, "run": {**SMALL["run"], "out_dir": str(tmp_path)}})
    run = FederatedRun(set_up_run(config), RunDirectory.create(tmp_path, "r"))
    seen = []

    def record(r: FederatedRun, point: str) -> None:
        checkpoints = r.run_dir.file("checkpoints")
        progress = checkpoints / "progress.json"
        staged = (checkpoints / "state.safetensors.staged").exists()
        committed = progress.exists() and read_json(progress)["rounds_done"] == r.state.rounds_done
        seen.append((r.state.rounds_done, point, staged, committed))

    run.checkpoint_hooks = [record]  # this run only
    run.set_up(resume=False)
    run.train()
    assert FederatedRun.checkpoint_hooks == ()
    assert [(done, point) for done, point, *_ in seen] == [(d, p) for d in range(3) for p in POINTS]
    for _, point, staged, committed in seen:
        assert (staged, committed) == {"before": (False, False), "staged": (True, False),
                                       "committed": (True, True), "after": (False, True)}[point]
