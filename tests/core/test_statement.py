import math

from protocols.tee import SIMULATED_NOTICE
from securediff.statement import (
    NOT_PRIVATE,
    PUBLIC_COUNT_ASSUMPTION,
    SKELLAM_COLLUSION_ASSUMPTION,
    privacy_statement,
    statement_markdown,
)


def _statement(**overrides):
    kwargs = dict(strategy="pfdm", protocol_secure=False, protocol_name="plain", private=True, delta=1e-5, t0=675,
                  clip_norm=10.0, forward_exact=9.97, forward_classic=11.57, shared_epsilon=9.97,
                  personal_epsilon=math.inf, accountant="pld", labels="public", label_epsilon=1.0)
    kwargs.update(overrides)
    return privacy_statement(**kwargs)


def test_pfdm_statement_covers_every_artefact_and_declares_labels_public():
    s = _statement()
    artefacts = [r["artefact"] for r in s["rows"]]
    assert artefacts == ["noised data x~", "shared denoiser and its updates", "personal denoiser",
                         "synthetic samples of a client", "transcript",
                         "evaluator (scores synthetic samples for the metrics)"]
    assert s["rows"][-1]["guarantee"].startswith("not private")
    shared = s["rows"][1]
    assert "PUBLIC" in shared["guarantee"] and "INSECURE" in shared["who_sees_it"]
    assert s["rows"][2]["guarantee"].startswith("none")
    assert s["headline"]["epsilon"] == 9.97


def test_insecure_mode_marks_every_row():
    s = _statement(private=False)
    assert all(NOT_PRIVATE in r["guarantee"] for r in s["rows"])
    assert NOT_PRIVATE in statement_markdown(s)


def test_fedavg_claims_nothing():
    s = _statement(strategy="fedavg", shared_epsilon=math.inf)
    assert s["headline"]["epsilon"] is None
    assert "none" in s["rows"][0]["guarantee"]


def test_a_tee_statement_says_the_enclave_is_simulated():
    s = _statement(protocol_secure=True, protocol_name="tee")
    assert s["notices"] == [SIMULATED_NOTICE]
    assert SIMULATED_NOTICE in s["rows"][1]["who_sees_it"]
    assert f"**{SIMULATED_NOTICE}.**" in statement_markdown(s)


def test_a_ckks_statement_says_one_colluding_client_unblinds_the_aggregator():
    s = _statement(protocol_secure=True, protocol_name="ckks")
    notice = "single-key ckks: not secure against an aggregator that colludes with any client"
    assert s["notices"] == [notice] and notice in s["rows"][1]["who_sees_it"]
    assert notice in statement_markdown(s)


def test_plain_and_secagg_statements_carry_no_protocol_notice():
    for name, secure in (("plain", False), ("secagg", True)):
        s = _statement(protocol_secure=secure, protocol_name=name)
        assert s["notices"] == [] and "simulated" not in statement_markdown(s)
    # a statement stored before notices existed still renders
    old = {k: v for k, v in _statement().items() if k != "notices"}
    assert statement_markdown(old).startswith("# Privacy statement")


def _row(statement, artefact):
    return next(r["guarantee"] for r in statement["rows"] if r["artefact"] == artefact)


def test_public_labels_make_the_guarantee_per_image():
    public = _statement()
    assert public["headline"]["per"].startswith("image (labels public)")
    assert "per image" in public["rows"][0]["guarantee"]
    private_labels = _statement(labels="randomized-response")
    assert private_labels["headline"]["per"].startswith("record (image and label)")


def test_personal_dp_sgd_is_add_remove_and_samples_carry_the_composition():
    s = _statement(personal_epsilon=2.0)
    personal, samples = s["rows"][2]["guarantee"], s["rows"][3]["guarantee"]
    assert personal.startswith("DP-SGD, add/remove per record: epsilon = 2.000")
    # PFDM's shared claim is replace-one: the add/remove personal epsilon doubles.
    assert "replace-one epsilon <= 13.970" in samples
    assert f"delta <= {1e-5 * (2 + math.exp(2.0)):.3g}" in samples
    assert s["assumptions"] == [PUBLIC_COUNT_ASSUMPTION]
    assert f"- {PUBLIC_COUNT_ASSUMPTION}." in statement_markdown(s)


def test_samples_without_personal_dp_protect_only_other_clients_records():
    samples = _statement()["rows"][3]["guarantee"]
    assert samples.startswith("none for the client's own records")
    assert "other clients' records: the shared guarantee" in samples
    assert _statement()["assumptions"] == []  # replace-one claims only: no count assumed
    local = _statement(strategy="local", shared_epsilon=math.inf, personal_epsilon=3.0)
    assert _row(local, "personal denoiser").startswith("DP-SGD, add/remove")
    assert "add/remove epsilon = 3.000" in _row(local, "synthetic samples of a client")


def test_add_remove_and_distributed_claims_state_their_assumptions():
    layer = _statement(strategy="layer-split", shared_epsilon=5.0, personal_epsilon=1.0)
    assert layer["assumptions"] == [PUBLIC_COUNT_ASSUMPTION]
    assert "add/remove epsilon <= 6.000 at delta <= 2e-05" in _row(layer, "synthetic samples of a client")
    hybrid = _statement(strategy="hybrid", protocol_secure=True, protocol_name="secagg",
                        shared_epsilon=5.0)
    assert hybrid["assumptions"] == [PUBLIC_COUNT_ASSUMPTION, SKELLAM_COLLUSION_ASSUMPTION]
    assert "colludes with the aggregator" in statement_markdown(hybrid)
