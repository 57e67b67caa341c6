"""Dead-letter records are written by workers, so they are read as untrusted (the CLI prints
them)."""

from __future__ import annotations

import json

import pytest

from hpc2edge.transport import deadletters

pytestmark = pytest.mark.unit


def test_a_record_round_trips_and_is_printable():
    letter = deadletters.make("edge", "bad\nline", "x\x1b[2J" * 10, worker="w", origin="o\r\n")
    back = deadletters.DeadLetter.from_json(letter.to_json())
    assert back == letter
    assert all(c.isprintable() for c in back.reason + back.excerpt + (back.origin or ""))


@pytest.mark.parametrize(
    "raw",
    [
        "x",
        "[]",
        "[" * 100_000 + "]" * 100_000,
        json.dumps({"queue": "edge", "reason": "r"}),  # fields missing
        json.dumps(
            {
                "queue": "edge",
                "reason": "r",
                "worker": "w",
                "time_unix_s": "now",
                "size_bytes": 1,
                "excerpt": "",
            }
        ),
        json.dumps(
            {
                "queue": "edge",
                "reason": ["r"],
                "worker": "w",
                "time_unix_s": 1.0,
                "size_bytes": 1,
                "excerpt": "",
            }
        ),
    ],
)
def test_a_planted_record_reads_as_unreadable_not_as_an_error(raw):
    letter = deadletters.DeadLetter.from_json(raw)
    assert letter.reason == "unreadable dead-letter record"
    assert len(letter.excerpt) <= 200
