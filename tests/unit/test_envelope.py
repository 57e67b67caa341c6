"""The raw task-message check (:func:`hpc2edge.transport.envelope.check`): every hostile shape of
``tests/support/hostile.py`` is refused with a one-line reason, and what the app itself sends
passes. Pure: no broker, no worker."""

from __future__ import annotations

import json

import pytest

from hpc2edge.config import load_settings
from hpc2edge.transport import envelope, taskids
from hpc2edge.transport.app import make_app
from tests.support import hostile

pytestmark = pytest.mark.unit

TASKS = {"hpc2edge.ping", "hpc2edge.measure", "hpc2edge.train"}
JSON_ONLY = {envelope.JSON_TYPE}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    a = make_app(load_settings(environ={"HPC2EDGE_STATE_DIR": str(tmp_path_factory.mktemp("s"))}))
    yield a
    a.close()


def _check(raw, queue, tasks=TASKS):
    return envelope.check(raw, queue, tasks=tasks, content_types=JSON_ONLY)


def test_every_case_has_an_expected_reason():
    assert set(hostile.REASONS) == set(hostile.MALFORMED)


@pytest.mark.parametrize("queue", ["edge", "train"])
@pytest.mark.parametrize("case", sorted(hostile.MALFORMED))
def test_malformed_message_is_refused_with_a_one_line_reason(app, queue, case):
    raw = hostile.malformed(app, queue, case)
    with pytest.raises(envelope.BadMessage) as info:
        _check(raw, queue)
    reason = info.value.reason
    assert hostile.REASONS[case] in reason
    assert "\n" not in reason and len(reason) < 300


@pytest.mark.parametrize("queue", ["edge", "train"])
def test_a_message_the_app_sends_passes(app, queue):
    env = hostile.envelope(app, queue)
    checked = _check(hostile.dumps(env), queue)
    assert checked.task == "hpc2edge.ping"
    assert checked.task_id == env["headers"]["id"] and taskids.queue_of(checked.task_id) == queue
    assert checked.envelope == env
    assert not checked.redelivered


@pytest.mark.parametrize("queue", ["edge", "train"])
def test_a_message_sent_with_expires_passes(app, queue):
    # send_task(expires=...) (probes.ping, CeleryDispatcher.submit) sets the AMQP expiration
    # property too: kombu's Redis transport puts it into the envelope's properties.
    env = hostile.envelope(app, queue, expiration=10)
    assert env["properties"].get("expiration") == "10000"
    assert _check(hostile.dumps(env), queue).task == "hpc2edge.ping"


def test_a_message_with_arguments_passes_and_bytes_are_accepted(app):
    env = hostile.envelope(app, "edge", "hpc2edge.measure", args=[{"arch_id": "a", "n": 3}])
    assert _check(hostile.dumps(env).encode(), "edge").task == "hpc2edge.measure"


def test_a_train_task_is_refused_on_the_edge_queue_when_not_served_there(app):
    env = hostile.envelope(app, "edge", "hpc2edge.train")
    with pytest.raises(envelope.BadMessage, match="not served"):
        _check(hostile.dumps(env), "edge", tasks={"hpc2edge.ping", "hpc2edge.measure"})


def test_a_redelivered_message_says_so(app):
    env = hostile.envelope(app, "edge")
    env["headers"]["redelivered"] = True
    assert _check(json.dumps(env), "edge").redelivered
    env = hostile.envelope(app, "edge")
    env["properties"]["delivery_info"]["redelivered"] = True
    assert _check(json.dumps(env), "edge").redelivered


def test_a_refusal_names_task_and_id_but_keeps_no_more_than_an_excerpt(app):
    env = hostile.envelope(app, "edge")
    env["headers"]["timelimit"] = ["x", None]
    with pytest.raises(envelope.BadMessage, match="timelimit") as info:
        _check(json.dumps(env), "edge")
    assert info.value.task == "hpc2edge.ping" and info.value.task_id == env["headers"]["id"]
    long = "y" * 10_000
    assert len(envelope.excerpt(long)) < envelope.EXCERPT_CHARS + 50


def test_the_size_limit_is_checked_before_parsing():
    with pytest.raises(envelope.BadMessage, match="over the 10-byte limit"):
        envelope.check("{" * 11, "edge", tasks=TASKS, content_types=JSON_ONLY, max_bytes=10)


@pytest.mark.parametrize(
    ("path", "value"),
    [
        ("headers.timelimit", [float("inf"), None]),
        ("headers.timelimit", [1, 2, 3]),
        ("headers.timelimit", [True, None]),
        ("headers.retries", -1),
        ("headers.eta", "tomorrow"),
        ("headers.lang", "js"),
        ("headers.stamps", {"x": 1}),
        ("properties.delivery_info", {"exchange": 1, "routing_key": "edge"}),
        ("properties.priority", "high"),
        ("content-encoding", "rot13"),
        ("body", 42),
    ],
)
def test_further_wrong_fields_are_refused(app, path, value):
    env = hostile.envelope(app, "edge")
    node = env
    *parents, leaf = path.split(".")
    for p in parents:
        node = node[p]
    node[leaf] = value
    with pytest.raises(envelope.BadMessage):
        _check(json.dumps(env), "edge")
