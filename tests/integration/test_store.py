"""The measurement store suite (:mod:`hpc2edge.testing.measurements`) on PostgreSQL, and a search
with both its study and its store there. SQLite: ``tests/unit/test_measurement_store.py``.

The server is the session's own (``postgres_server`` in ``tests/conftest.py``: ``initdb`` and
``postgres`` on a free loopback port, tests/support/postgres.py), each test on a fresh database
dropped afterwards; a shared server is never touched. Without PostgreSQL installed the tests are
skipped with the reason (``make setup`` installs it).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

sqlalchemy = pytest.importorskip("sqlalchemy")
pytest.importorskip("psycopg", reason="psycopg is not installed (the `postgres` extra)")

from hpc2edge.store.measurements import MeasurementStore, StoreError  # noqa: E402
from hpc2edge.testing.measurements import MeasurementStoreContract  # noqa: E402

pytestmark = pytest.mark.integration


class TestOnPostgreSQL(MeasurementStoreContract):
    @pytest.fixture
    def url(self, postgres_server) -> Iterator[str]:
        with postgres_server.database() as url:
            yield url


def test_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="cannot open the measurement store"):
        MeasurementStore("postgresql+psycopg://nobody:secret@127.0.0.1:1/nothing")
    with pytest.raises(StoreError) as info:
        MeasurementStore("postgresql+psycopg://nobody:secret@127.0.0.1:1/nothing")
    assert "secret" not in str(info.value)


def test_a_search_on_postgresql_storage_and_store_resumes(postgres_server, tmp_path: Path) -> None:
    """The orchestrator with both its study and its store on PostgreSQL, stopped and resumed."""
    pytest.importorskip("torch")
    from hpc2edge.search.orchestrator import LEASE_ATTR
    from tests.unit.test_search_orchestrator import Harness

    with postgres_server.database() as url:
        h = Harness(tmp_path)
        h.url = url
        h.store = MeasurementStore(url)  # the same database holds both: no table clashes
        try:
            o = h.orchestrator("pg", trials=4, parallel=2)
            o.start()
            for _ in range(3):
                o.step()
            o.study.set_user_attr(LEASE_ATTR, None)  # as if the process had died
            summary = h.orchestrator("pg", trials=4, parallel=2).run()
            assert summary["complete"] == 4
            assert len(h.store.measurements()) == h.sent("measure") > 0
        finally:
            h.store.close()
