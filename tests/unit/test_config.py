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
