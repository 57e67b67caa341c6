"""The Kubernetes manifests in k8s/ and `hpc2edge k8s secrets`.

The trees are rendered with kustomize semantics by ``tests/support/kustomize.py`` (no kustomize
binary is needed) and every object is validated offline against the Kubernetes JSON schemas that
the ``kubernetes-validate`` package ships, in strict mode (unknown fields are errors).
"""

from __future__ import annotations

import base64
import hashlib
import re
import shlex
import socket
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from click.testing import CliRunner

from hpc2edge.cli.root import cli, main
from hpc2edge.config import load_settings
from hpc2edge.ops import k8s, localbroker
from hpc2edge.roles import ROLES
from tests.support import kustomize
from tests.support.k8s_manifests import (
    BASE,
    EDGE_EXPOSED,
    K8S,
    ROOT,
    containers,
    decode_secrets,
    find,
    generated,
    mounted_files,
    pod_spec,
    template_keys,
    templates,
    with_dashboard,
    workloads,
)

pytestmark = pytest.mark.unit

REDIS_PORT = 6390
# The oldest Kubernetes minor still widely run, and the newest whose schemas the package ships.
SCHEMA_VERSIONS = ["1.29.0", kubernetes_validate.latest_version()]


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    return {
        "base": kustomize.build(BASE),
        "edge-exposed": kustomize.build(EDGE_EXPOSED),
        "with-dashboard": with_dashboard(tmp_path_factory.mktemp("with-dashboard")),
    }


@pytest.fixture(params=["base", "edge-exposed", "with-dashboard"])
def docs(request, trees):
    return trees[request.param]


def _directives(text):
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.strip().partition(" ")
            out[key] = value
    return out


def _redis(docs):
    return find(docs, "StatefulSet", "hpc2edge-redis")


def _redis_container(docs):
    return next(c for c in pod_spec(_redis(docs))["containers"] if c["name"] == "redis")


# --- rendering --------------------------------------------------------------------------------


def test_base_and_overlay_render_the_expected_objects(trees):
    names = {(d["kind"], d["metadata"]["name"].rsplit("-config-", 1)[0]) for d in trees["base"]}
    assert names == {
        ("Namespace", "hpc2edge"),
        ("StatefulSet", "hpc2edge-redis"),
        ("Service", "hpc2edge-redis"),
        ("NetworkPolicy", "hpc2edge-redis"),
        ("ConfigMap", "hpc2edge-redis"),
        ("Deployment", "hpc2edge-flower"),
        ("Service", "hpc2edge-flower"),
        ("NetworkPolicy", "hpc2edge-flower"),
        ("ConfigMap", "hpc2edge-flower"),
    }
    base = {(d["kind"], d["metadata"]["name"]) for d in trees["base"]}
    overlay = {(d["kind"], d["metadata"]["name"]) for d in trees["edge-exposed"]}
    assert overlay - base == {
        ("Service", "hpc2edge-redis-edge"),
        ("NetworkPolicy", "hpc2edge-redis-edge"),
    }
    assert base <= overlay
    for doc in trees["edge-exposed"]:
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "hpc2edge"
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "hpc2edge"


def test_overlay_sets_the_image_and_changes_nothing_else_of_the_base(trees):
    by_key = {(d["kind"], d["metadata"]["name"]): d for d in trees["edge-exposed"]}
    for doc in trees["base"]:
        other = by_key[(doc["kind"], doc["metadata"]["name"])]
        if doc["kind"] != "Deployment":
            assert other == doc
    flower = pod_spec(find(trees["edge-exposed"], "Deployment", "hpc2edge-flower"))
    images = {c["image"] for c in containers(flower)}
    assert images == {"registry.example.invalid/hpc2edge:0.1.0.dev0"}
    assert {c["image"] for c in containers(pod_spec(_redis(trees["base"])))} == {
        "redis:7.2.11-alpine"
    }


def test_generated_config_maps_are_referenced_by_their_hashed_names(docs):
    config_maps = {d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap"}
    assert all(re.fullmatch(r"hpc2edge-(redis|flower)-config-[0-9a-f]{10}", n) for n in config_maps)
    for doc in workloads(docs):
        for volume in pod_spec(doc).get("volumes", []):
            for source in [volume, *volume.get("projected", {}).get("sources", [])]:
                if "configMap" in source:
                    assert source["configMap"]["name"] in config_maps


@pytest.mark.parametrize(
    ("kustomization", "files", "message"),
    [
        ({"patches": [{"path": "p.yaml"}]}, {}, "unsupported keys"),
        ({"configMapGenerator": [{"name": "c", "files": ["../outside.conf"]}]}, {}, "outside"),
        (
            {"labels": [{"pairs": {"a": "b"}, "includeSelectors": True}]},
            {},
            "includeSelectors",
        ),
        ({"resources": ["https://example.invalid/x"]}, {}, "remote"),
        ({"resources": ["r.yaml"]}, {"r.yaml": "apiVersion: v1\nkind: Pod\n"}, "not known"),
    ],
)
def test_renderer_refuses_what_it_does_not_implement(tmp_path, kustomization, files, message):
    folder = tmp_path / "k"
    folder.mkdir()
    (tmp_path / "outside.conf").write_text("x\n")
    for name, text in files.items():
        (folder / name).write_text(text)
    doc = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
    (folder / "kustomization.yaml").write_text(yaml.safe_dump({**doc, **kustomization}))
    with pytest.raises(kustomize.Unsupported, match=message):
        kustomize.build(folder)


def test_renderer_refuses_a_symlink_that_leaves_the_folder(tmp_path):
    # Why k8s/base/redis.conf is a copy and not a link to broker/redis.conf.
    folder = tmp_path / "k"
    folder.mkdir()
    (folder / "redis.conf").symlink_to(ROOT / "broker" / "redis.conf")
    (folder / "kustomization.yaml").write_text(
        "kind: Kustomization\nconfigMapGenerator:\n  - name: c\n    files: [redis.conf]\n"
    )
    with pytest.raises(kustomize.Unsupported, match="outside"):
        kustomize.build(folder)


# --- schemas ----------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("schema validation tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_every_object_validates_offline_against_the_kubernetes_schemas(docs, version, no_network):
    for doc in docs:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} (k8s {version}): {exc}")


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
def test_secret_templates_validate_too(version, no_network):
    for doc in templates():
        kubernetes_validate.validate(doc, version, strict=True)


# --- redis.conf -------------------------------------------------------------------------------


def test_the_copy_in_k8s_base_is_broker_redis_conf_byte_for_byte():
    copy = (BASE / "redis.conf").read_bytes()
    assert copy == (ROOT / "broker" / "redis.conf").read_bytes(), (
        "k8s/base/redis.conf differs from broker/redis.conf: cp broker/redis.conf k8s/base/"
    )


def test_the_config_map_holds_broker_redis_conf(docs):
    data = generated(docs, "hpc2edge-redis-config")["data"]
    assert list(data) == ["redis.conf"]
    assert data["redis.conf"] == (ROOT / "broker" / "redis.conf").read_text()


def test_every_path_redis_conf_names_is_mounted_from_the_right_object(trees):
    docs = trees["edge-exposed"]
    conf = _directives(generated(docs, "hpc2edge-redis-config")["data"]["redis.conf"])
    files = mounted_files(_redis(docs), "redis")
    command = _redis_container(docs)["command"]
    assert files[command[1]][0:2] == (
        "configMap",
        generated(docs, "hpc2edge-redis-config")["metadata"]["name"],
    )
    assert files[conf["tls-cert-file"]] == ("secret", "hpc2edge-broker-tls", "server.pem")
    assert files[conf["tls-key-file"]] == ("secret", "hpc2edge-broker-tls", "server-key.pem")
    assert files[conf["tls-ca-cert-file"]] == ("secret", "hpc2edge-broker-tls", "ca.pem")
    assert files[conf["aclfile"]] == ("secret", "hpc2edge-broker-acl", "users.acl")


def test_the_command_line_sets_only_deployment_choices(trees):
    docs = trees["edge-exposed"]
    redis = _redis(docs)
    container = _redis_container(docs)
    command = container["command"]
    assert command[:2] == ["redis-server", "/etc/hpc2edge/redis.conf"]
    options = {}
    for arg in command[2:]:
        if arg.startswith("--"):
            current = arg[2:]
            options[current] = []
        else:
            options[current].append(arg)
    assert set(options) == {"bind", "dir", "maxmemory"}
    # The AOF folder is the PersistentVolumeClaim from volumeClaimTemplates.
    claims = [t["metadata"]["name"] for t in redis["spec"]["volumeClaimTemplates"]]
    data_mount = next(m for m in container["volumeMounts"] if m["name"] in claims)
    assert options["dir"] == [data_mount["mountPath"]]
    assert not data_mount.get("readOnly", False)
    # maxmemory under the memory limit, so noeviction refuses writes before the OOM killer acts.
    assert options["maxmemory"] == ["2gb"] and container["resources"]["limits"]["memory"] == "4Gi"


def test_the_broker_listens_only_on_the_tls_port(docs):
    conf = _directives(generated(docs, "hpc2edge-redis-config")["data"]["redis.conf"])
    assert conf["port"] == "0"
    assert conf["tls-port"] == str(REDIS_PORT)
    assert conf["tls-auth-clients"] == "yes"
    container = _redis_container(docs)
    assert container["ports"] == [
        {"name": "rediss", "containerPort": REDIS_PORT, "protocol": "TCP"}
    ]
    services = [
        d
        for d in docs
        if d["kind"] == "Service" and d["spec"]["selector"]["app.kubernetes.io/name"] == "redis"
    ]
    assert services
    for service in services:
        assert service["spec"]["ports"] == [
            {"name": "rediss", "port": REDIS_PORT, "targetPort": "rediss", "protocol": "TCP"}
        ]
    base_service = find(docs, "Service", "hpc2edge-redis")
    assert base_service["spec"]["type"] == "ClusterIP"


def test_probes_ping_through_tls_as_the_monitor_user_and_need_pong(trees):
    docs = trees["base"]
    container = _redis_container(docs)
    files = mounted_files(_redis(docs), "redis")
    acl = localbroker.render_acl({u: "pw" for u in ROLES})
    assert re.search(r"^user default off ", acl, flags=re.M)
    assert re.search(r"^user monitor on .* \+@connection", acl, flags=re.M)  # PING is @connection
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        command = container[probe]["exec"]["command"]
        assert command[:2] == ["sh", "-c"]
        script = command[2]
        assert script.endswith("ping | grep -qx PONG"), probe
        words = shlex.split(script.split("|")[0])
        assert words[words.index("-p") + 1] == str(REDIS_PORT)
        assert "--tls" in words and words[words.index("--user") + 1] == "monitor"
        for flag, expected in [
            ("--cacert", ("secret", "hpc2edge-broker-tls", "ca.pem")),
            ("--cert", ("secret", "hpc2edge-monitor-client", "monitor.pem")),
            ("--key", ("secret", "hpc2edge-monitor-client", "monitor-key.pem")),
        ]:
            assert files[words[words.index(flag) + 1]] == expected
        password_file = re.search(r'REDISCLI_AUTH="\$\(cat (\S+)\)"', script).group(1)
        assert files[password_file] == ("secret", "hpc2edge-monitor-client", "monitor.password")


# --- security properties ----------------------------------------------------------------------


def test_every_container_is_limited_and_unprivileged(docs):
    assert workloads(docs)
    for doc in workloads(docs):
        pod = pod_spec(doc)
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        pod_sc = pod.get("securityContext", {})
        assert pod.get("automountServiceAccountToken") is False, where
        assert pod.get("enableServiceLinks") is False, where
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
        assert all("hostPath" not in v for v in pod.get("volumes", [])), where
        assert pod_sc.get("seccompProfile") == {"type": "RuntimeDefault"}, where
        for c in containers(pod):
            sc = c.get("securityContext", {})
            name = f"{where} container {c['name']}"
            for section in ("requests", "limits"):
                assert set(c["resources"][section]) >= {"cpu", "memory"}, name
            assert sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True, name
            assert sc.get("runAsUser", pod_sc.get("runAsUser", 0)) != 0, name
            assert sc.get("allowPrivilegeEscalation") is False, name
            assert sc.get("privileged", False) is False, name
            assert sc.get("capabilities") == {"drop": ["ALL"]}, name
            assert sc.get("readOnlyRootFilesystem") is True, name


def test_namespace_enforces_the_restricted_pod_security_standard(trees):
    labels = find(trees["base"], "Namespace", "hpc2edge")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


def test_no_kustomization_ships_a_secret(docs):
    # `kubectl apply -k` must never replace the real Secrets with placeholders.
    assert not [d for d in docs if d["kind"] == "Secret"]


def test_every_secret_the_pods_read_has_a_template_with_that_key(docs):
    keys = template_keys()
    for doc in workloads(docs):
        for c in containers(pod_spec(doc)):
            for kind, name, key in mounted_files(doc, c["name"]).values():
                if kind == "secret":
                    assert key in keys[name], f"{name}/{key}"
            for env in c.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in keys[ref["name"]], f"{ref['name']}/{ref['key']}"


def test_the_templates_match_what_the_cli_prints():
    keys = template_keys()
    printed = {name: set(items) for name, items in k8s.SECRETS.items()}
    # The optuna-dashboard's database URL is not known to hpc2edge: created by hand.
    assert keys == {**printed, "hpc2edge-optuna-storage": {"url"}}


def test_network_policies_admit_only_the_broker_port_to_redis(docs):
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    for doc in workloads(docs):
        labels = doc["spec"]["template"]["metadata"]["labels"]
        selecting = [
            p for p in policies if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()
        ]
        assert selecting, f"no NetworkPolicy selects {doc['metadata']['name']}"
    redis_policies = [
        p
        for p in policies
        if p["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "redis"
    ]
    for policy in redis_policies:
        for rule in policy["spec"]["ingress"]:
            assert rule["ports"] == [{"port": REDIS_PORT, "protocol": "TCP"}]
            assert rule["from"], "an empty `from` admits everyone"
    base_policy = find(docs, "NetworkPolicy", "hpc2edge-redis")
    assert base_policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert base_policy["spec"]["egress"] == []


def test_overlay_exposes_the_tls_port_only_to_the_listed_sites(trees):
    docs = trees["edge-exposed"]
    service = find(docs, "Service", "hpc2edge-redis-edge")
    assert service["spec"]["type"] == "LoadBalancer"
    assert service["spec"]["externalTrafficPolicy"] == "Local"  # keeps the sites' addresses
    ranges = service["spec"]["loadBalancerSourceRanges"]
    assert ranges
    policy = find(docs, "NetworkPolicy", "hpc2edge-redis-edge")
    cidrs = [peer["ipBlock"]["cidr"] for peer in policy["spec"]["ingress"][0]["from"]]
    assert cidrs == ranges, "keep loadBalancerSourceRanges and the NetworkPolicy's CIDRs equal"
    assert find(docs, "Service", "hpc2edge-redis")["spec"]["type"] == "ClusterIP"


def test_flower_requires_basic_auth_from_a_secret(docs):
    flower = find(docs, "Deployment", "hpc2edge-flower")
    container = next(c for c in pod_spec(flower)["containers"] if c["name"] == "flower")
    assert container["command"][:4] == ["celery", "-A", "hpc2edge", "flower"]
    assert not any("basic" in arg or "auth" in arg for arg in container["command"])
    env = {e["name"]: e for e in container["env"]}
    assert env["FLOWER_BASIC_AUTH"]["valueFrom"]["secretKeyRef"] == {
        "name": "hpc2edge-flower-auth",
        "key": "FLOWER_BASIC_AUTH",
    }
    assert "FLOWER_UNAUTHENTICATED_API" not in env
    assert not container.get("envFrom")
    assert find(docs, "Service", "hpc2edge-flower")["spec"]["type"] == "ClusterIP"
    # /healthcheck is the page Flower serves without credentials; nothing else may be probed.
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthcheck"


def test_flower_config_is_valid_and_points_at_the_mounted_monitor_files(trees, tmp_path):
    docs = trees["edge-exposed"]
    flower = find(docs, "Deployment", "hpc2edge-flower")
    pod = pod_spec(flower)
    container = next(c for c in pod["containers"] if c["name"] == "flower")
    config_path = next(e["value"] for e in container["env"] if e["name"] == "HPC2EDGE_CONFIG")
    files = mounted_files(flower, "flower", docs)
    kind, name, key = files[config_path]
    text = next(d for d in docs if d["metadata"]["name"] == name)["data"][key]
    assert kind == "configMap" and text == (BASE / "flower.toml").read_text()

    # Loaded the way the pod loads it: the file, and only the pod's own HPC2EDGE_* variables.
    (tmp_path / "flower.toml").write_text(text)
    env = {
        e["name"]: e.get("value", "") for e in container["env"] if e["name"] != "HPC2EDGE_CONFIG"
    }
    env = {k: v for k, v in env.items() if k.startswith("HPC2EDGE_")}
    settings = load_settings(environ={**env, "HPC2EDGE_CONFIG": str(tmp_path / "flower.toml")})
    assert settings.role == "monitor" and settings.username == "monitor"
    redis_service = find(docs, "Service", "hpc2edge-redis")
    assert settings.broker.host == redis_service["metadata"]["name"] == k8s.BROKER_SERVICE
    assert settings.broker.port == REDIS_PORT and settings.tls.check_hostname
    # The init container copies the monitor Secret's files, mode 0400, to where the config looks.
    init = next(c for c in pod["initContainers"] if c["name"] == "client-files")
    script = init["command"][2]
    target = script.split("-t ")[1].split()[0]
    copied = {f"{target}/{Path(src).name}": src for src in shlex.split(script)[4:]}
    init_files = mounted_files(flower, "client-files")
    wanted = {
        str(settings.tls.ca_cert): "ca.pem",
        str(settings.tls.cert): "monitor.pem",
        str(settings.tls.key): "monitor-key.pem",
        str(settings.broker.password_file): "monitor.password",
    }
    for path, secret_key in wanted.items():
        assert init_files[copied[path]] == ("secret", "hpc2edge-monitor-client", secret_key)
    assert "install -m 0400" in script
    shared = {m["name"] for m in init["volumeMounts"]} & {
        m["name"] for m in container["volumeMounts"]
    }
    assert any(v["name"] in shared and "emptyDir" in v for v in pod["volumes"])


def test_optuna_dashboard_stays_inside_the_cluster(trees):
    docs = trees["with-dashboard"]
    service = find(docs, "Service", "hpc2edge-optuna-dashboard")
    assert service["spec"]["type"] == "ClusterIP"
    policy = find(docs, "NetworkPolicy", "hpc2edge-optuna-dashboard")
    assert policy["spec"]["ingress"][0]["from"] == [
        {"podSelector": {"matchLabels": {"hpc2edge.io/dashboard-access": "true"}}}
    ]
    deployment = find(docs, "Deployment", "hpc2edge-optuna-dashboard")
    container = pod_spec(deployment)["containers"][0]
    assert "OPTUNA_STORAGE" not in " ".join(container["command"][:2])
    assert container["env"][0]["valueFrom"]["secretKeyRef"]["name"] == "hpc2edge-optuna-storage"
    assert deployment["metadata"]["namespace"] == "hpc2edge"


# --- hpc2edge k8s secrets ---------------------------------------------------------------------


@pytest.fixture
def deployment_files(tmp_path):
    """`hpc2edge tls init` and `hpc2edge broker acl` output, made by the real commands."""
    runner = CliRunner()
    result = runner.invoke(
        cli, ["tls", "init", "--dir", str(tmp_path / "tls"), "--host", k8s.BROKER_SERVICE]
    )
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        cli,
        ["broker", "acl", "--secrets", str(tmp_path / "secrets"), "--out", str(tmp_path / "a")],
    )
    assert result.exit_code == 0, result.output
    (tmp_path / "secrets" / "flower.password").write_text("flower-pw-123\n")
    return tmp_path


def _secrets_cli(*args):
    return CliRunner().invoke(cli, ["k8s", "secrets", *args])


def test_k8s_secrets_prints_valid_secrets_holding_the_files(deployment_files, no_network):
    tls_dir, secrets_dir = deployment_files / "tls", deployment_files / "secrets"
    result = _secrets_cli("--dir", str(tls_dir), "--namespace", "brokers")
    assert result.exit_code == 0, result.output
    assert "warning" not in result.stderr
    for doc in yaml.safe_load_all(result.stdout):
        if doc:
            assert doc["metadata"]["namespace"] == "brokers"
            for version in SCHEMA_VERSIONS:
                kubernetes_validate.validate(doc, version, strict=True)
    data = decode_secrets(result.stdout)
    assert {n: set(v) for n, v in data.items()} == {n: set(v) for n, v in k8s.SECRETS.items()}

    tls_file = lambda name: (tls_dir / name).read_bytes()  # noqa: E731
    password = lambda user: (secrets_dir / f"{user}.password").read_text().strip()  # noqa: E731
    assert data["hpc2edge-broker-tls"] == {
        "ca.pem": tls_file("ca.pem"),
        "server.pem": tls_file("server.pem"),
        "server-key.pem": tls_file("server-key.pem"),
    }
    assert data["hpc2edge-monitor-client"] == {
        "ca.pem": tls_file("ca.pem"),
        "monitor.pem": tls_file("monitor.pem"),
        "monitor-key.pem": tls_file("monitor-key.pem"),
        "monitor.password": (secrets_dir / "monitor.password").read_bytes(),
    }
    acl = data["hpc2edge-broker-acl"]["users.acl"].decode()
    assert acl == (deployment_files / "a").read_text()  # what `broker acl` wrote
    assert acl == localbroker.render_acl({u: password(u) for u in ROLES})
    assert hashlib.sha256(password("edge").encode()).hexdigest() in acl
    assert data["hpc2edge-flower-auth"] == {"FLOWER_BASIC_AUTH": b"admin:flower-pw-123"}


def test_k8s_secrets_leaves_out_the_ca_key_and_other_roles_credentials(deployment_files):
    tls_dir, secrets_dir = deployment_files / "tls", deployment_files / "secrets"
    result = _secrets_cli("--dir", str(tls_dir))
    assert result.exit_code == 0, result.output
    carried = b"".join(
        v for items in decode_secrets(result.stdout).values() for v in items.values()
    )
    for name in ("ca-key.pem", "admin-key.pem", "edge-key.pem", "hpc-key.pem"):
        assert (tls_dir / name).read_bytes() not in carried, name
    for user in ("admin", "orchestrator", "hpc", "edge"):
        assert (secrets_dir / f"{user}.password").read_text().strip().encode() not in carried
    b64 = result.stdout
    assert base64.b64encode((tls_dir / "ca-key.pem").read_bytes()).decode() not in b64


def test_k8s_secrets_fails_with_exit_2_on_a_missing_dir(tmp_path):
    missing = tmp_path / "nope"
    result = _secrets_cli("--dir", str(missing))
    assert result.exit_code == 2
    assert f"{missing} is not a folder" in result.stderr
    assert result.stdout == ""
    # The real entry point (non-standalone click) gives the same code.
    assert main(["k8s", "secrets", "--dir", str(missing)]) == 2


def test_k8s_secrets_fails_with_exit_2_on_missing_files_and_names_each(deployment_files):
    tls_dir, secrets_dir = deployment_files / "tls", deployment_files / "secrets"
    (tls_dir / "server-key.pem").unlink()
    (secrets_dir / "flower.password").unlink()
    before = sorted(p.name for p in secrets_dir.iterdir())
    result = _secrets_cli("--dir", str(tls_dir))
    assert result.exit_code == 2
    assert "server-key.pem is missing" in result.stderr
    assert "flower.password is missing" in result.stderr
    assert result.stdout == ""
    assert sorted(p.name for p in secrets_dir.iterdir()) == before  # nothing created


def test_k8s_secrets_creates_missing_passwords_only_when_asked(tmp_path):
    tls_dir = tmp_path / "tls"
    assert CliRunner().invoke(cli, ["tls", "init", "--dir", str(tls_dir)]).exit_code == 0
    assert _secrets_cli("--dir", str(tls_dir)).exit_code == 2
    assert not (tmp_path / "secrets").exists()
    result = _secrets_cli("--dir", str(tls_dir), "--create-passwords")
    assert result.exit_code == 0, result.output
    created = sorted((tmp_path / "secrets").iterdir())
    assert [p.name for p in created] == sorted(
        [f"{u}.password" for u in ROLES] + ["flower.password"]
    )
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in created)
    assert "created" in result.stderr
    # The broker certificate lacks the in-cluster Service name: a warning says how to fix it.
    assert f"does not name {k8s.BROKER_SERVICE}" in result.stderr
    again = _secrets_cli("--dir", str(tls_dir), "--create-passwords")
    assert decode_secrets(again.stdout) == decode_secrets(result.stdout)


def test_k8s_secrets_refuses_a_bad_namespace_or_user(deployment_files):
    tls_dir = str(deployment_files / "tls")
    assert _secrets_cli("--dir", tls_dir, "--namespace", "Not_A_Name").exit_code == 2
    assert _secrets_cli("--dir", tls_dir, "--flower-user", "a:b").exit_code == 2


def test_k8s_readme_names_the_commands_that_exist():
    readme = (K8S / "README.md").read_text()
    for command in (
        "hpc2edge tls init",
        "hpc2edge k8s secrets --dir",
        "kubectl apply -k k8s/overlays/edge-exposed",
        "kubectl -n hpc2edge port-forward",
    ):
        assert command in readme
