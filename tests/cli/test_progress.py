"""The progress display counts what the run reports: each client once per round
(a client has a shared and a personal phase), the client count learnt from the
run itself on a resume, and a budget growth shown with digits enough to see it."""

from __future__ import annotations

from cli.progress import RunProgress, _budget_growth


def _clients_task(progress: RunProgress):
    return next(t for t in progress.bar.tasks if t.id == progress.clients)


def test_each_client_counts_once_per_round_and_a_resume_learns_the_count():
    progress = RunProgress(enabled=False)  # a resume: no count known up front
    progress("run_start", {"clients": 3, "rounds": 4, "rounds_done": 1})
    for r in (1, 2):
        progress("round_start", {"round": r, "rounds": 4})
        for phase in ("shared", "personal"):
            for c in ("client-00", "client-01", "client-02"):
                progress("client_start", {"round": r, "client": c, "phase": phase})
        task = _clients_task(progress)
        assert (task.completed, task.total) == (3, 3)
    rounds = next(t for t in progress.bar.tasks if t.id == progress.rounds)
    assert (rounds.completed, rounds.total) == (1, 4)  # the resumed run had one round done


def test_a_budget_growth_is_visible_in_the_digits_shown():
    text = _budget_growth(9.9990001, 9.9990009)
    before, after = text.split("from ")[1].split(" to ")
    assert before != after and float(after) > float(before)
    assert "still covers" in _budget_growth(9.999, 9.999)
