import math

from protocols.tee import SIMULATED_NOTICE
from securediff.statement import NOT_PRIVATE, privacy_statement, statement_markdown


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
                         "synthetic samples of a client", "transcript"]
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
