"""The shipped broker policy: redis.conf and the users.acl template."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from hpc2edge.config import load_settings
from hpc2edge.ops import localbroker
from hpc2edge.roles import ROLES
from hpc2edge.transport.app import celery_config

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _directives(text):
    out = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out[key] = value
    return out


def test_packaged_files_are_the_top_level_broker_files():
    for name in ("redis.conf", "users.acl"):
        assert localbroker.resource_text(name) == (ROOT / "broker" / name).read_text()


def test_redis_conf_is_tls_only_with_client_certs_and_aof():
    d = _directives(localbroker.resource_text("redis.conf"))
    assert d["port"] == "0"
    assert d["tls-auth-clients"] == "yes"
    assert d["tls-protocols"] == '"TLSv1.2 TLSv1.3"'
    assert d["appendonly"] == "yes"
    assert d["appendfsync"] == "everysec"
    assert d["maxmemory-policy"] == "noeviction"
    assert d["enable-debug-command"] == "no"


def test_render_acl_hashes_passwords_and_drops_comments():
    passwords = {u: f"pw-{u}" for u in ROLES}
    text = localbroker.render_acl(passwords)
    assert "${" not in text
    assert not any(line.startswith("#") for line in text.splitlines())
    for pw in passwords.values():
        assert pw not in text
    import hashlib

    assert f"#{hashlib.sha256(b'pw-edge').hexdigest()}" in text
    users = re.findall(r"^user (\S+) ", text, flags=re.M)
    assert users == ["default", "admin", "orchestrator", "hpc", "edge", "monitor"]
    assert re.search(r"^user default off ", text, flags=re.M)


def test_render_acl_needs_every_password():
    with pytest.raises(ValueError, match="monitor"):
        localbroker.render_acl({u: "x" for u in ROLES if u != "monitor"})


def test_no_role_but_admin_may_run_dangerous_commands():
    for line in localbroker.resource_text("users.acl").splitlines():
        if line.startswith("user ") and not line.startswith(("user admin ", "user default ")):
            assert "-@dangerous" in line and "-@admin" in line
            assert "+@all" not in line


def test_edge_acl_names_no_train_key():
    (edge_line,) = [
        ln
        for ln in localbroker.resource_text("users.acl").splitlines()
        if ln.startswith("user edge ")
    ]
    keys = [t for t in edge_line.split() if "~" in t and not t.startswith("%R~")]
    assert not any("train" in k for k in keys), keys


def test_celery_config_conventions():
    conf = celery_config(
        load_settings(environ={"HPC2EDGE_BROKER_PASSWORD": "p@ss/word", "HPC2EDGE_ROLE": "edge"})
    )
    assert conf["broker_url"].startswith("rediss://edge:p%40ss%2Fword@")
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    assert conf["result_accept_content"] == ["json"]
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["task_routes"]["hpc2edge.train"] == {"queue": "train"}
    assert conf["task_routes"]["hpc2edge.measure"] == {"queue": "edge"}
    assert [q.name for q in conf["task_queues"]] == ["train", "edge"]
    opts = conf["broker_transport_options"]
    assert opts["unacked_key"] == "hpc2edge:unacked:edge"
    assert opts["visibility_timeout"] > 6 * 3600
    assert conf["broker_use_ssl"]["ssl_cert_reqs"] == 2  # ssl.CERT_REQUIRED
    assert conf["result_expires"] > 0


def test_cli_broker_acl_renders_for_a_remote_broker(tmp_path, capsys):
    from hpc2edge.cli import main

    out = tmp_path / "users.acl"
    assert main(["broker", "acl", "--secrets", str(tmp_path / "secrets"), "--out", str(out)]) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    passwords = {p.stem: p.read_text().strip() for p in (tmp_path / "secrets").glob("*.password")}
    assert set(passwords) == set(ROLES)
    assert out.read_text() == localbroker.render_acl(passwords)
    # A second run keeps the passwords: the sites already hold them.
    assert main(["broker", "acl", "--secrets", str(tmp_path / "secrets"), "--out", str(out)]) == 0
    assert out.read_text() == localbroker.render_acl(passwords)


def test_missing_redis_server_says_how_to_install_it(monkeypatch, tmp_path):
    from hpc2edge.errors import BrokerError

    monkeypatch.setenv("PATH", str(tmp_path))  # an empty PATH: no redis-server anywhere
    with pytest.raises(BrokerError, match="apt-get install redis-server"):
        localbroker.find_redis_server()


def test_redis_conf_bounds_memory_scripts_values_and_idle_connections():
    d = _directives(localbroker.resource_text("redis.conf"))
    assert d["maxmemory"] == "2gb" and d["maxmemory-policy"] == "noeviction"
    assert int(d["busy-reply-threshold"]) <= 100
    mib = lambda v: int(v.removesuffix("mb"))  # noqa: E731
    artifact_mib = load_settings(environ={}).edge.artifact_max_mib
    # One artifact SET fits; the query buffer holds it; both stay below Redis's 1 GiB default.
    assert artifact_mib < mib(d["proto-max-bulk-len"]) < mib(d["client-query-buffer-limit"]) < 1024
    assert d["maxmemory-clients"] == "1gb"
    assert 0 < int(d["timeout"]) <= 600
    assert "maxclients" not in d  # Redis's default (10000, or the file-descriptor limit)


def test_no_role_but_admin_may_run_scripts_of_its_own_or_walk_the_keyspace():
    for line in localbroker.resource_text("users.acl").splitlines():
        if line.startswith("user ") and not line.startswith(("user admin ", "user default ")):
            words = line.split()
            assert "+eval" not in words and "+script|load" not in words, words[1]
            assert words.index("-@scripting") < words.index("+evalsha"), words[1]
            for rule in ("-scan", "-randomkey", "-client|tracking"):
                assert rule in words, (words[1], rule)


def test_the_admin_only_acl_keeps_every_role_but_admin_out(tmp_path):
    passwords = {u: f"pw-{u}" for u in ROLES}
    localbroker.write_acl(tmp_path / "users.acl", passwords, admin_only=True)
    text = (tmp_path / "users.acl").read_text()
    assert re.search(r"^user admin on ", text, flags=re.M)
    for user in ("orchestrator", "hpc", "edge", "monitor"):
        assert re.search(rf"^user {user} off ", text, flags=re.M), user
    assert text.replace(" off ", " on ").replace("user default on", "user default off") == (
        localbroker.render_acl(passwords)
    )


def test_local_broker_command_overrides_maxmemory_only_when_set(tmp_path, monkeypatch):
    monkeypatch.setattr(localbroker, "find_redis_server", lambda: "redis-server")
    local = localbroker.LocalBroker(tmp_path)
    assert "--maxmemory" not in local.command(tmp_path, "127.0.0.1", 6390)
    command = local.command(tmp_path, "127.0.0.1", 6390, maxmemory_mib=64)
    assert command[command.index("--maxmemory") + 1] == "64mb"
