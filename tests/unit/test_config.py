"""Settings: one TOML file plus HPC2EDGE_* overrides, every problem reported at once."""

from __future__ import annotations

from pathlib import Path

import pytest

from hpc2edge.cli import main
from hpc2edge.config import MASK, load_settings, render_masked
from hpc2edge.errors import ConfigError

pytestmark = pytest.mark.unit


def test_defaults_describe_the_local_stack():
    s = load_settings(environ={})
    assert s.role == "orchestrator"
    assert s.broker.port == 6390
    assert s.tls.cert == Path(".hpc2edge/tls/orchestrator.pem")
    assert s.broker.password_file == Path(".hpc2edge/secrets/orchestrator.password")


def test_file_paths_are_relative_to_the_file(tmp_path):
    (tmp_path / "edge.password").write_text("s3cret\n")
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        'role = "edge"\n[broker]\nhost = "broker.example.org"\nport = 7000\n'
        'password_file = "edge.password"\n[tls]\ncert = "certs/edge.pem"\n'
    )
    s = load_settings(cfg, environ={})
    assert s.role == "edge" and s.username == "edge"
    assert s.broker.host == "broker.example.org" and s.broker.port == 7000
    assert s.broker.password == "s3cret"
    assert s.tls.cert == tmp_path / "certs/edge.pem"
    assert s.tls.key == Path(".hpc2edge/tls/edge-key.pem")  # a default: under state_dir


def test_environment_overrides_the_file(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[broker]\nport = 7000\n")
    env = {
        "HPC2EDGE_CONFIG": str(cfg),
        "HPC2EDGE_BROKER_PORT": "7001",
        "HPC2EDGE_TLS_CHECK_HOSTNAME": "false",
        "HPC2EDGE_BROKER_PASSWORD": "pw",
    }
    s = load_settings(environ=env)
    assert s.broker.port == 7001
    assert s.tls.check_hostname is False
    assert s.broker.password == "pw"


def test_three_errors_are_reported_together(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('role = "cook"\n[broker]\nport = 70000\nhots = "typo"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ={})
    problems = info.value.problems
    assert len(problems) == 3, problems
    text = str(info.value)
    assert "role" in text and "broker.port" in text and "broker.hots" in text


def test_cli_reports_all_problems_and_exits_2(tmp_path, capsys):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('role = "cook"\n[broker]\nport = 70000\nhots = "typo"\n')
    code = main(["--config", str(cfg), "config", "show"])
    err = capsys.readouterr().err
    assert code == 2
    assert "3 problems" in err
    for needle in ("'cook'", "70000", "hots"):
        assert needle in err
    assert "Traceback" not in err


def test_wrong_types_are_named(tmp_path):
    cfg = tmp_path / "t.toml"
    cfg.write_text('[broker]\nport = "six"\nconnect_timeout_s = true\n[tls]\ncheck_hostname = 1\n')
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ={})
    assert len(info.value.problems) == 3


def test_unknown_environment_variable_is_a_problem():
    with pytest.raises(ConfigError, match="HPC2EDGE_BROKR_HOST"):
        load_settings(environ={"HPC2EDGE_BROKR_HOST": "x"})


def test_visibility_timeout_must_exceed_the_longest_task():
    env = {
        "HPC2EDGE_BROKER_VISIBILITY_TIMEOUT_S": "3600",
        "HPC2EDGE_WORKER_TRAIN_TIME_LIMIT_S": "7200",
    }
    with pytest.raises(ConfigError, match="visibility_timeout_s"):
        load_settings(environ=env)


def test_password_in_the_file_is_refused(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('[broker]\npassword = "plain"\n')
    with pytest.raises(ConfigError, match="password_file"):
        load_settings(cfg, environ={})


def test_secrets_never_printed():
    s = load_settings(environ={"HPC2EDGE_BROKER_PASSWORD": "hunter2-very-secret"})
    assert "hunter2" not in repr(s)
    shown = render_masked(s)
    assert "hunter2" not in shown and MASK in shown


def test_config_show_masks_env_password(monkeypatch, capsys):
    monkeypatch.setenv("HPC2EDGE_BROKER_PASSWORD", "hunter2-very-secret")
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out and MASK in out


def test_check_reports_missing_files(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"HPC2EDGE_STATE_DIR": str(tmp_path)}, require_files=True)
    assert any("tls init" in p for p in info.value.problems)
    assert any("password" in p for p in info.value.problems)


def test_config_file_not_found_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "missing.toml", environ={})


def test_a_section_that_is_not_a_table_is_a_problem_not_a_crash(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("broker = 5\ntls = 'x'\n")
    assert main(["--config", str(cfg), "config", "show"]) == 2
    err = capsys.readouterr().err
    assert "[broker]: expected a table" in err and "Traceback" not in err


# --- [security]: message signing ---------------------------------------------------------------


def test_signing_is_off_by_default_and_its_paths_follow_the_role():
    s = load_settings(environ={})
    assert s.security.sign is False
    assert s.security.key == Path(".hpc2edge/tls/orchestrator-sign-key.pem")
    assert s.security.cert == Path(".hpc2edge/tls/orchestrator-sign.pem")
    # The orchestrator receives only the workers' signatures (results, control replies) ...
    assert s.security.cert_store == Path(".hpc2edge/tls/signers/results")
    # ... and a worker runs only tasks signed by a certificate in signers/tasks.
    edge = load_settings(environ={"HPC2EDGE_ROLE": "edge"})
    assert edge.security.key == Path(".hpc2edge/tls/edge-sign-key.pem")
    assert edge.security.cert_store == Path(".hpc2edge/tls/signers/tasks")
    assert edge.security.result_cert_store == Path(".hpc2edge/tls/signers/results")


def test_security_section_from_file_and_environment(tmp_path):
    cfg = tmp_path / "edge.toml"
    cfg.write_text(
        'role = "edge"\n[security]\nsign = true\nkey = "keys/dev-sign-key.pem"\n'
        'cert_store = "/etc/hpc2edge/signers"\n'
    )
    s = load_settings(cfg, environ={})
    assert s.security.sign is True
    assert s.security.key == tmp_path / "keys/dev-sign-key.pem"  # relative to the file
    assert s.security.cert_store == Path("/etc/hpc2edge/signers")
    assert s.security.cert == Path(".hpc2edge/tls/edge-sign.pem")  # a default
    off = load_settings(cfg, environ={"HPC2EDGE_SECURITY_SIGN": "false"})
    assert off.security.sign is False


def test_security_problems_are_reported_with_the_others(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('role = "monitor"\n[security]\nsign = 1\nkeyfile = "k.pem"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(cfg, environ={})
    text = str(info.value)
    assert len(info.value.problems) == 2, info.value.problems
    assert "security.sign: expected bool" in text and "security.keyfile" in text
    with pytest.raises(ConfigError, match="only orchestrator, hpc, edge sign"):
        load_settings(environ={"HPC2EDGE_ROLE": "monitor", "HPC2EDGE_SECURITY_SIGN": "1"})


def test_render_masked_shows_the_security_section():
    shown = render_masked(load_settings(environ={"HPC2EDGE_SECURITY_SIGN": "true"}))
    assert "[security]\nsign = true\n" in shown
    assert 'result_cert_store = ".hpc2edge/tls/signers/results"' in shown


@pytest.fixture(scope="module")
def signing_tls(tmp_path_factory):
    from hpc2edge.pki import ca

    state = tmp_path_factory.mktemp("signing")
    ca.init(state / "tls")
    (state / "secrets").mkdir()
    (state / "secrets" / "edge.password").write_text("pw\n")
    return state


def _signed_edge(state, **security):
    env = {"HPC2EDGE_STATE_DIR": str(state), "HPC2EDGE_ROLE": "edge"}
    env["HPC2EDGE_SECURITY_SIGN"] = "true"
    env.update({f"HPC2EDGE_SECURITY_{k.upper()}": str(v) for k, v in security.items()})
    return load_settings(environ=env, require_files=True)


def test_check_accepts_the_files_of_tls_init(signing_tls):
    assert _signed_edge(signing_tls).security.sign


def test_check_refuses_ecdsa_tls_files_for_signing(signing_tls):
    tls_dir = signing_tls / "tls"
    with pytest.raises(ConfigError) as info:
        _signed_edge(signing_tls, key=tls_dir / "edge-key.pem", cert=tls_dir / "edge.pem")
    problems = info.value.problems
    assert len(problems) == 2, problems
    assert all("RSA only" in p for p in problems)


def test_check_refuses_a_key_that_is_not_the_certificates(signing_tls):
    with pytest.raises(ConfigError, match="is not the key of"):
        _signed_edge(signing_tls, key=signing_tls / "tls" / "hpc-sign-key.pem")


def test_check_refuses_missing_and_empty_stores(signing_tls, tmp_path):
    with pytest.raises(ConfigError) as info:
        _signed_edge(signing_tls, cert_store=tmp_path / "missing", result_cert_store=tmp_path)
    text = str(info.value)
    assert "security.cert_store" in text and "is not a folder" in text
    assert "security.result_cert_store" in text and "holds no certificate" in text


def test_check_names_missing_signing_files(tmp_path):
    env = {"HPC2EDGE_STATE_DIR": str(tmp_path), "HPC2EDGE_SECURITY_SIGN": "true"}
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env, require_files=True)
    text = str(info.value)
    assert "security.key" in text and "tls init" in text
    assert "security.cert_store" in text


def test_signing_makes_celery_sign_and_accept_only_signed_messages():
    from hpc2edge.transport import signing
    from hpc2edge.transport.app import celery_config

    plain = celery_config(load_settings(environ={}))
    assert plain["task_serializer"] == "json" and "security_key" not in plain
    conf = celery_config(load_settings(environ={"HPC2EDGE_SECURITY_SIGN": "true"}))
    assert conf["task_serializer"] == "auth" and conf["accept_content"] == ["auth"]
    assert conf["result_serializer"] == signing.RESULT_SERIALIZER
    assert conf["result_accept_content"] == [signing.RESULT_CONTENT_TYPE]
    assert conf["security_digest"] == "sha256"
    assert conf["security_cert_store"] == ".hpc2edge/tls/signers/results"
    assert conf["event_serializer"] == "json"  # events are never signed (docs/security.md)
