"""The measurement store suite (:mod:`hpc2edge.testing.measurements`) on SQLite, a file per test.
PostgreSQL, on a server of the tests' own: ``tests/integration/test_store.py``.
"""

from __future__ import annotations

import pytest

pytest.importorskip("sqlalchemy")

from hpc2edge.testing.measurements import MeasurementStoreContract

pytestmark = pytest.mark.unit


class TestOnSQLite(MeasurementStoreContract):
    @pytest.fixture
    def url(self, tmp_path) -> str:
        return f"sqlite:///{tmp_path / 'm.db'}"
