"""Per-device identities without a broker: the registry, the device users' ACL rules, the CLI.

The rules are checked here against the key names the code really produces (task ids, unacked,
dead-letter and liveness keys), with Python's fnmatch standing in for Redis's glob (the same
``*``, ``?`` and ``[...]``); tests/integration/test_device_identity.py checks them on a real
broker.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import stat
from fnmatch import fnmatchcase
from pathlib import Path

import pytest

from hpc2edge.cli.root import main
from hpc2edge.config import load_settings
from hpc2edge.errors import TLSError
from hpc2edge.ops import k8s, localbroker
from hpc2edge.pki import ca, devices
from hpc2edge.roles import DEFAULT_KIND, ROLES
from hpc2edge.transport import deadletters, liveness, taskids
from hpc2edge.transport.app import unacked_prefix
from hpc2edge.transport.intake import REDELIVERIES_SUFFIX
from hpc2edge.transport.units import quarantine_key
from hpc2edge.util import net

pytestmark = pytest.mark.unit

T0 = dt.datetime(2025, 1, 31, 9, 0, tzinfo=dt.timezone.utc)


def _clock(*times: dt.datetime):
    pending = list(times)
    return lambda: pending.pop(0)


@pytest.fixture(scope="module")
def ca_root(tmp_path_factory):
    """One CA for the module (issuing one costs a few RSA keys); tests copy nothing from it but
    issue their own devices into their own folders."""
    root = tmp_path_factory.mktemp("ca")
    ca.init(root / "tls")
    return root / "tls"


@pytest.fixture
def layout(tmp_path, ca_root):
    """A state folder's layout: tls/ (the module's CA, broker and role files, no signers/) and
    no secrets/ yet."""
    tls = tmp_path / "tls"
    tls.mkdir()
    for path in ca_root.glob("*.pem"):
        (tls / path.name).write_bytes(path.read_bytes())
    return tls, tmp_path / "secrets"


def _keys_of(queue: str) -> list[str]:
    """Every key a worker of ``queue`` writes, named by the code that writes it."""
    kind = DEFAULT_KIND if queue == "edge" else queue.removeprefix("edge.")
    settings = load_settings(environ={"HPC2EDGE_ROLE": "edge", "HPC2EDGE_EDGE_KIND": kind})
    unacked = unacked_prefix(settings)
    return [
        queue,
        *(f"{queue}{localbroker.KOMBU_PRIORITY_SEP}{p}" for p in (3, 6, 9)),
        unacked,
        f"{unacked}:index",
        f"{unacked}:mutex",
        f"_kombu.binding.{queue}",
        f"_kombu.binding_permanent.{queue}",
        "celery-task-meta-" + taskids.new(queue),
        deadletters.key(queue),
        deadletters.key(queue) + REDELIVERIES_SUFFIX,
        liveness.key(queue),
        liveness.units_key(queue),
    ]


def _readable_only(patterns: list[str], key: str) -> bool:
    return any(fnmatchcase(key, p[3:]) for p in patterns if p.startswith("%R~"))


def _writable(patterns: list[str], key: str) -> bool:
    return any(fnmatchcase(key, p[1:]) for p in patterns if p.startswith("~"))


def _channels(patterns: list[str], channel: str) -> bool:
    return any(fnmatchcase(channel, p[1:]) for p in patterns if p.startswith("&"))


# --- hostile first: what a device of kind `a` must not reach --------------------------------


@pytest.mark.parametrize("other", ["edge.b", "edge.ab", "edge.a-b", "edge.a0", "edge"])
def test_a_device_user_reaches_no_key_of_another_kind(other):
    patterns = localbroker.device_patterns("a")
    for key in _keys_of(other):
        assert not _writable(patterns, key), key
    assert not _channels(patterns, "celery-task-meta-" + taskids.new(other))
    assert not _readable_only(patterns, quarantine_key(other))


def test_a_device_user_reaches_nothing_of_training_nor_writes_artifacts():
    patterns = localbroker.device_patterns("a")
    for key in [
        "train",
        f"train{localbroker.KOMBU_PRIORITY_SEP}3",
        "celery-task-meta-" + taskids.new("train"),
        "hpc2edge:unacked:hpc",
        "hpc2edge:unacked:edge",
        "hpc2edge:dead:train",
        "hpc2edge:alive:train",
        "_kombu.binding.train",
        "hpc2edge:artifact:" + "0" * 64,
        "celery",
    ]:
        assert not _writable(patterns, key), key
    assert "%R~hpc2edge:artifact:*" in patterns  # read only
    assert not _channels(patterns, "/0.celery.pidbox")


def test_a_result_pattern_takes_exactly_32_hex_digits():
    patterns = localbroker.device_patterns("a")
    good = taskids.new("edge.a")
    assert _writable(patterns, f"celery-task-meta-{good}")
    for bad in (good + "0", good[:-1], good[:-1] + "g", good.replace("edge.a-", "edge.a-b-")):
        assert not _writable(patterns, f"celery-task-meta-{bad}"), bad


@pytest.mark.parametrize("queue", ["edge.a", "edge.orin-agx", "edge"])
def test_a_device_user_reaches_every_key_of_its_own_kind(queue):
    kind = DEFAULT_KIND if queue == "edge" else queue.removeprefix("edge.")
    patterns = localbroker.device_patterns(kind)
    for key in _keys_of(queue):
        assert _writable(patterns, key), key
    assert _writable(patterns, liveness.KINDS_KEY)  # the one key all edge workers share
    assert _readable_only(patterns, quarantine_key(queue))
    assert not _writable(patterns, quarantine_key(queue))  # the orchestrator decides
    assert _channels(patterns, "celery-task-meta-" + taskids.new(queue))
    assert _channels(patterns, "/0.celeryev/worker.heartbeat")


def test_the_priority_separator_is_kombus():
    from kombu.transport.redis import Channel

    assert Channel.sep == localbroker.KOMBU_PRIORITY_SEP


def _words(acl: str, user: str) -> list[str]:
    line = next(x for x in acl.splitlines() if x.startswith(f"user {user} "))
    return line.split()[2:]


def _commands(words: list[str]) -> list[str]:
    return [w for w in words if w != "on" and not w.startswith(("#", "~", "%", "&"))]


def test_device_users_have_exactly_the_edge_roles_commands():
    login = devices.Login(user="edge-orin1", kind="orin", password="pw")
    acl = localbroker.render_acl({u: "x" for u in ROLES}, device_logins=[login])
    device, edge = _words(acl, "edge-orin1"), _words(acl, "edge")
    assert _commands(device) == _commands(edge)
    assert device[:2] == ["on", "#" + hashlib.sha256(b"pw").hexdigest()]
    assert [w for w in device if w[0] in "~%&"] == localbroker.device_patterns("orin")
    assert "pw" not in acl.split()


def test_the_acl_has_active_devices_only_and_keeps_them_off_until_the_preload(layout, tmp_path):
    tls, secrets = layout
    devices.issue(tls, secrets, "keep", "a")
    devices.issue(tls, secrets, "gone", "a")
    devices.revoke(tls, secrets, "gone")
    logins = devices.logins(secrets)
    assert [x.user for x in logins] == ["edge-keep"]
    passwords = localbroker.ensure_secrets(secrets)
    out = tmp_path / "users.acl"
    localbroker.write_acl(out, passwords, device_logins=logins, admin_only=True)
    text = out.read_text()
    assert "user edge-keep off #" in text and "edge-gone" not in text
    localbroker.write_acl(out, passwords, device_logins=logins)
    assert "user edge-keep on #" in out.read_text()
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


# --- the registry ---------------------------------------------------------------------------


def test_issue_writes_certificate_password_and_registry_entry(layout):
    tls, secrets = layout
    issued = devices.issue(tls, secrets, "orin-07", "orin-agx", now=_clock(T0))
    assert issued.tls.cert == tls / "edge-orin-07.pem" and issued.tls.key.is_file()
    assert (tls / "signers" / "results" / "edge-orin-07-sign.pem").is_file()
    assert issued.password_file == secrets / "edge-orin-07.password"
    password = issued.password_file.read_text().strip()
    assert len(password) >= 40 and issued.login.password == password
    assert password not in repr(issued.login)
    for path in (issued.password_file, devices.registry_path(secrets)):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o700
    stored = json.loads(devices.registry_path(secrets).read_text())
    assert stored == {
        "version": 1,
        "devices": [
            {
                "name": "orin-07",
                "kind": "orin-agx",
                "user": "edge-orin-07",
                "issued_at": "2025-01-31T09:00:00+00:00",
                "revoked_at": None,
            }
        ],
    }
    assert devices.load(secrets).get("orin-07") == issued.device


def test_an_existing_name_is_refused_without_force_and_reissued_with_it(layout):
    tls, secrets = layout
    first = devices.issue(tls, secrets, "orin1", "a")
    before = {p: p.read_bytes() for p in (*tls.glob("edge-orin1*"), first.password_file)}
    with pytest.raises(TLSError, match=r"registered already .*--force"):
        devices.issue(tls, secrets, "orin1", "b")
    assert {p: p.read_bytes() for p in before} == before
    assert devices.load(secrets).get("orin1").kind == "a"
    again = devices.issue(tls, secrets, "orin1", "b", force=True)
    assert again.login.password != first.login.password
    assert again.tls.cert.read_bytes() != before[first.tls.cert]
    assert devices.load(secrets).get("orin1").kind == "b"


@pytest.mark.parametrize(
    ("name", "kind"),
    [
        ("Bad Name", "a"),
        ("../x", "a"),
        ("x\n", "a"),
        ("ok", "Bad_K"),
        ("ok", "-a"),
        ("ok", ""),
        ("sign", "a"),
        ("orin-sign", "a"),
    ],
)
def test_bad_names_and_kinds_write_nothing(layout, name, kind):
    tls, secrets = layout
    before = sorted(tls.rglob("*"))
    with pytest.raises(ValueError):
        devices.issue(tls, secrets, name, kind)
    assert sorted(tls.rglob("*")) == before
    assert not secrets.exists()


def test_revoke_marks_the_entry_forgets_the_password_and_untrusts_the_signer(layout):
    tls, secrets = layout
    issued = devices.issue(tls, secrets, "orin1", "a", now=_clock(T0))
    later = T0 + dt.timedelta(hours=1)
    revocation = devices.revoke(tls, secrets, "orin1", now=_clock(later))
    assert not revocation.already and revocation.revoked_at == later
    assert revocation.untrusted == tls / "signers" / "results" / "edge-orin1-sign.pem"
    assert not revocation.untrusted.exists() and not issued.password_file.exists()
    entry = devices.load(secrets).get("orin1")
    assert entry.state is devices.DeviceState.REVOKED and entry.revoked_at == later
    again = devices.revoke(tls, secrets, "orin1", now=_clock(later + dt.timedelta(days=1)))
    assert again.already and again.revoked_at == later and again.untrusted is None
    assert devices.load(secrets).get("orin1").revoked_at == later


def test_revoking_an_unknown_device_is_a_value_error(layout):
    tls, secrets = layout
    with pytest.raises(ValueError, match="no device 'ghost'"):
        devices.revoke(tls, secrets, "ghost")


@pytest.mark.parametrize(
    "text",
    [
        "not json",
        '{"version": 2, "devices": []}',
        '{"version": 1, "devices": {}}',
        '{"version": 1, "devices": [{"name": "Bad Name", "kind": "a"}]}',
        '{"version": 1, "devices": [{"name": "x", "kind": "a", "user": "edge", '
        '"issued_at": "2025-01-31T09:00:00+00:00"}]}',
        '{"version": 1, "devices": [{"name": "x", "kind": "a", "user": "edge-x", '
        '"issued_at": "yesterday"}]}',
        "[" * 100_000,
    ],
)
def test_a_malformed_registry_is_one_clear_error(tmp_path, text):
    (tmp_path / "devices.json").write_text(text)
    with pytest.raises(TLSError, match=r"device registry .* is malformed"):
        devices.load(tmp_path)


def test_an_active_device_without_its_password_stops_the_rendering(layout):
    tls, secrets = layout
    issued = devices.issue(tls, secrets, "orin1", "a")
    issued.password_file.unlink()
    with pytest.raises(TLSError, match=r"edge-orin1\.password.*add-device NAME"):
        devices.logins(secrets)


def test_k8s_secrets_carry_the_device_users_and_no_device_password(layout):
    tls, secrets = layout
    k8s.ensure_passwords(secrets)
    issued = devices.issue(tls, secrets, "orin1", "a")
    data = k8s.secret_data(tls, secrets)
    acl = data["hpc2edge-broker-acl"]["users.acl"].decode()
    assert "user edge-orin1 on #" in acl
    assert issued.login.password.encode() not in b"".join(
        v for items in data.values() for v in items.values()
    )
    issued.password_file.unlink()
    with pytest.raises(k8s.InputError, match=r"edge-orin1\.password"):
        k8s.secret_data(tls, secrets)


def test_the_device_config_is_a_valid_edge_config(layout, tmp_path):
    tls, secrets = layout
    device = devices.issue(tls, secrets, "orin1", "orin-agx").device
    folder = tmp_path / "device"
    folder.mkdir()
    path = folder / "edge.toml"
    path.write_text(devices.device_config(device, broker_host="b.example.org", broker_port=6390))
    s = load_settings(path)
    assert (s.role, s.username, s.edge.kind) == ("edge", "edge-orin1", "orin-agx")
    assert (s.broker.host, s.broker.port) == ("b.example.org", 6390)
    assert s.broker.password_file == folder / "secrets" / "edge-orin1.password"
    assert s.tls.cert == folder / "tls" / "edge-orin1.pem"
    assert s.tls.ca_cert == folder / "tls" / "ca.pem"
    assert s.security.cert_store == folder / "tls" / "signers" / "tasks"


# --- the CLI --------------------------------------------------------------------------------


@pytest.fixture
def state(layout, monkeypatch):
    """The commands' settings: this state folder, and a broker port nobody listens on."""
    tls, _ = layout
    for name in list(os.environ):
        if name.startswith("HPC2EDGE_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HPC2EDGE_STATE_DIR", str(tls.parent))
    monkeypatch.setenv("HPC2EDGE_BROKER_PORT", str(net.free_port()))
    return tls.parent


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize(
    "argv",
    [
        ["tls", "add-device", "Bad Name"],
        ["tls", "add-device", "a/b", "--kind", "a"],
        ["tls", "add-device", "ok", "--kind", "Bad_K"],
        ["tls", "add-device", "ok", "--kind", "a.b"],
        ["tls", "revoke-device", "Bad Name"],
    ],
)
def test_cli_bad_input_is_one_line_exit_2_and_writes_nothing(state, capsys, argv):
    before = sorted(state.rglob("*"))
    assert main(argv) == 2
    out = capsys.readouterr()
    assert out.out == "" and len(_lines(out.err)) == 1, out.err
    assert sorted(state.rglob("*")) == before


def test_cli_add_device_prints_what_the_device_needs(state, capsys, tmp_path):
    config = tmp_path / "out" / "edge-orin1.toml"
    argv = ["tls", "add-device", "orin1", "--kind", "orin-agx", "--write-config", str(config)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "broker user edge-orin1" in out and "queue edge.orin-agx" in out
    assert str(state / "secrets" / "edge-orin1.password") in out
    assert "edge-orin1-key.pem" in out and "edge-orin1-sign.pem" in out
    assert 'username = "edge-orin1"' in out and 'kind = "orin-agx"' in out
    assert "not applied now" in out and "hpc2edge broker sync-devices" in out
    assert config.read_text() in out
    assert main(["tls", "add-device", "orin1"]) == 1
    assert "registered already" in capsys.readouterr().err
    assert main(["tls", "add-device", "orin1", "--force"]) == 0


def test_cli_revoke_unknown_is_one_line_exit_2(state, capsys):
    assert main(["tls", "revoke-device", "ghost"]) == 2
    err = capsys.readouterr().err
    assert len(_lines(err)) == 1 and "no device 'ghost'" in err


def test_cli_revoke_without_a_broker_updates_the_registry_and_says_what_to_run(state, capsys):
    assert main(["tls", "add-device", "orin1", "--kind", "a"]) == 0
    capsys.readouterr()
    assert main(["tls", "revoke-device", "orin1"]) == 1
    out = capsys.readouterr()
    assert "revoked at" in out.out and "re-read signers/results/ only when they start" in out.out
    assert "hpc2edge tls revoke-device orin1` again" in out.err
    assert "hpc2edge broker start` leaves the user out" in out.err
    assert devices.load(state / "secrets").get("orin1").revoked_at is not None
    assert main(["tls", "revoke-device", "orin1"]) == 1
    assert "already revoked" in capsys.readouterr().out


def test_cli_with_dir_alone_uses_the_secrets_folder_beside_it(tmp_path, ca_root, capsys):
    tls = tmp_path / "site" / "tls"
    tls.mkdir(parents=True)
    for name in ("ca.pem", "ca-key.pem"):
        (tls / name).write_bytes((ca_root / name).read_bytes())
    assert main(["tls", "add-device", "orin1", "--dir", str(tls)]) == 0
    entry = devices.load(tmp_path / "site" / "secrets").get("orin1")
    assert entry is not None and entry.kind == DEFAULT_KIND
    # Not the folder the settings' broker renders from: nothing is sent to any broker.
    assert "renders its users from" in capsys.readouterr().out


def test_cli_broker_acl_renders_the_device_users(layout, tmp_path, capsys):
    tls, secrets = layout
    devices.issue(tls, secrets, "orin1", "a")
    out = tmp_path / "users.acl"
    assert main(["broker", "acl", "--secrets", str(secrets), "--out", str(out)]) == 0
    assert "edge-orin1" in capsys.readouterr().out
    assert "user edge-orin1 on #" in out.read_text()


def test_registry_path_is_beside_the_role_passwords(tmp_path):
    assert devices.registry_path(tmp_path) == tmp_path / "devices.json"
    assert devices.password_file(tmp_path, "x") == Path(tmp_path) / "edge-x.password"
    assert devices.user_of("x") == "edge-x" and devices.user_of("x") not in ROLES
