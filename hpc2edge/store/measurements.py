"""The measurement store: every latency measurement ever made, shared across studies.

The paper's three tables (docs/paper.md, "The paper's system"), kept with their names so its queries
still read, and extended with the *measurement context*: what must be equal for an old measurement
to stand in for a new one (docs/measurement.md, "Measurement context")::

    edge_devices            one row per device kind and hardware model (not per unit: the
                            units of a kind share their measurements)
    network_architectures   one row per ArchSpec (arch_id = sha256 of its canonical JSON)
    edge_measurements       one row per (architecture, device, batch size) measurement:
                            latency_ms (median of the compute series), results (the whole
                            LatencyResult as JSON) and the context columns below

Context columns: ``onnx_sha256``, ``backend``, ``precision``, ``batch_size``, ``runtime_key``
(sha256 of the backend's fingerprint: runtime version, providers, threads), ``power_mode`` (the
Jetson's nvpmodel and jetson_clocks state; null elsewhere) and ``software_versions``. Their hash
is ``context_key``; :meth:`MeasurementStore.find` is one indexed lookup on it. A measurement is
recorded at most once per task (``task_id`` is unique), so a result processed twice after a
restart is stored once.

The same code runs on SQLite (the default: a file under ``.hpc2edge/``) and PostgreSQL (a URL for
several orchestrators on several hosts); only portable column types are used (``JSON`` maps to
JSON on PostgreSQL, text on SQLite).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    create_engine,
    event,
    select,
)
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from hpc2edge.errors import Hpc2EdgeError
from hpc2edge.roles import DEFAULT_KIND, check_kind
from hpc2edge.space.base import ArchSpec
from hpc2edge.util.filemodes import private_sqlite


class StoreError(Hpc2EdgeError):
    """The measurement store cannot be opened, read or written."""


def _sha256_json(data: Any) -> str:
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


class Base(DeclarativeBase):
    pass


class EdgeDevice(Base):
    __tablename__ = "edge_devices"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_key: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(255))
    model: Mapped[str | None] = mapped_column(String(255), nullable=True)
    fingerprint: Mapped[dict[str, Any]] = mapped_column(JSON)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class NetworkArchitecture(Base):
    __tablename__ = "network_architectures"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    arch_id: Mapped[str] = mapped_column(String(64), unique=True)
    space: Mapped[str] = mapped_column(String(50))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    params: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    flops: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)


class EdgeMeasurement(Base):
    __tablename__ = "edge_measurements"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=_now)
    network_architecture_id: Mapped[int] = mapped_column(
        ForeignKey("network_architectures.id", ondelete="CASCADE"), index=True
    )
    device_id: Mapped[int] = mapped_column(ForeignKey("edge_devices.id", ondelete="CASCADE"))
    batch_size: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    results: Mapped[dict[str, Any]] = mapped_column(JSON)
    # The measurement context (see the module docstring).
    context_key: Mapped[str] = mapped_column(String(64), index=True)
    onnx_sha256: Mapped[str] = mapped_column(String(64))
    backend: Mapped[str] = mapped_column(String(40))
    precision: Mapped[str] = mapped_column(String(8))
    runtime_key: Mapped[str] = mapped_column(String(64))
    power_mode: Mapped[str | None] = mapped_column(String(255), nullable=True)
    software_versions: Mapped[dict[str, Any]] = mapped_column(JSON)
    task_id: Mapped[str | None] = mapped_column(String(255), unique=True, nullable=True)


@dataclass(frozen=True)
class DeviceContext:
    """Which device kind, runtime and power mode measured (or will measure): half a cache key.

    Built from a device's kind, telemetry fingerprint and backend fingerprint, as a measurement
    result carries them and as ``hpc2edge.ping`` on an edge queue reports them, so the
    orchestrator can look up a measurement before sending anything to the device.

    The identity is the kind and the hardware model (device model, CPU model, machine), never
    the host: every unit of a kind answers for the others (the unit that measured is in the
    stored result, ``worker``), and a kind name given by mistake to other hardware does not
    share measurements with it. The software stack (backend fingerprint and versions) and the
    power mode are the rest of the context.
    """

    kind: str
    device_key: str
    name: str
    model: str | None
    backend: str
    runtime_key: str
    power_mode: str | None
    device: Mapping[str, Any]
    backend_fingerprint: Mapping[str, Any]

    @classmethod
    def from_fingerprints(
        cls,
        device: Mapping[str, Any],
        backend_fingerprint: Mapping[str, Any],
        kind: str = DEFAULT_KIND,
    ) -> DeviceContext:
        identity: dict[str, Any] = {
            k: device.get(k) for k in ("device_model", "cpu_model", "machine")
        }
        identity["kind"] = kind
        power = {k: device.get(k) for k in ("nvpmodel", "jetson_clocks")}
        return cls(
            kind=kind,
            device_key=_sha256_json(identity),
            name=kind,
            model=device.get("device_model") or device.get("cpu_model"),
            backend=str(backend_fingerprint.get("backend", "unknown")),
            runtime_key=_sha256_json(
                {"backend": dict(backend_fingerprint), "versions": device.get("versions")}
            ),
            power_mode=None if not any(power.values()) else json.dumps(power, sort_keys=True),
            device=dict(device),
            backend_fingerprint=dict(backend_fingerprint),
        )

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> DeviceContext:
        """The context of a successful ``hpc2edge.measure`` result (of the default kind when the
        worker predates device kinds)."""
        kind = result.get("kind", DEFAULT_KIND)
        return cls.from_fingerprints(
            result["device"], result["backend_fingerprint"], check_kind(kind)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "device_key": self.device_key,
            "name": self.name,
            "model": self.model,
            "backend": self.backend,
            "runtime_key": self.runtime_key,
            "power_mode": self.power_mode,
        }

    def context_key(
        self,
        arch_id: str,
        onnx_sha256: str,
        precision: str,
        batch_size: int,
        protocol: Mapping[str, Any] | None,
    ) -> str:
        """The key a measurement is found by; ``protocol`` is the one that ran (its JSON), so a
        quick measurement never stands in for one made with the default protocol."""
        return _sha256_json(
            {
                "arch_id": arch_id,
                "protocol": None if protocol is None else dict(protocol),
                "onnx_sha256": onnx_sha256,
                "precision": precision,
                "batch_size": batch_size,
                "device_key": self.device_key,
                "backend": self.backend,
                "runtime_key": self.runtime_key,
                "power_mode": self.power_mode,
            }
        )


@dataclass(frozen=True)
class Measurement:
    """One stored measurement, detached from the database session."""

    id: int
    arch_id: str
    device_name: str
    batch_size: int
    latency_ms: float
    results: dict[str, Any]
    context_key: str
    task_id: str | None


class MeasurementStore:
    """The measurement store at a SQLAlchemy URL (tables are created when missing)."""

    def __init__(self, url: str) -> None:
        self.url = url
        try:
            if url.startswith("sqlite:///"):
                private_sqlite(url)  # file 0600 (folder 0700) from birth, whatever the umask
            self._engine = create_engine(
                url,
                connect_args={"timeout": 30} if url.startswith("sqlite") else {},
                pool_pre_ping=True,
            )
            if url.startswith("sqlite"):
                # SQLite ignores ON DELETE CASCADE unless asked, per connection.
                event.listen(self._engine, "connect", _sqlite_foreign_keys)
            Base.metadata.create_all(self._engine)
        except (SQLAlchemyError, ValueError, OSError) as exc:
            raise StoreError(f"cannot open the measurement store {_safe(url)}: {exc}") from exc
        self._sessions = sessionmaker(self._engine, expire_on_commit=False)

    def __repr__(self) -> str:
        return f"MeasurementStore({_safe(self.url)!r})"

    def close(self) -> None:
        self._engine.dispose()

    @contextmanager
    def _session(self, what: str) -> Iterator[Session]:
        try:
            with self._sessions.begin() as session:
                yield session
        except IntegrityError:
            raise
        except SQLAlchemyError as exc:
            raise StoreError(f"measurement store {_safe(self.url)}: {what}: {exc}") from exc

    # --- writes -----------------------------------------------------------------------------

    def record(
        self,
        spec: ArchSpec,
        result: Mapping[str, Any],
        *,
        task_id: str | None = None,
        params: int | None = None,
        flops: int | None = None,
    ) -> list[Measurement]:
        """Store a successful ``hpc2edge.measure`` result: one row per batch size measured.

        Idempotent by ``task_id``: recording the same task again returns the stored rows.
        """
        if result.get("status") != "ok":
            raise ValueError("only successful measurement results are stored")
        if result.get("arch_id") != spec.arch_id:
            raise ValueError(f"result is for {result.get('arch_id')!r}, not {spec.arch_id}")
        ctx = DeviceContext.from_result(result)
        try:
            with self._session("recording a measurement") as s:
                device = self._device(s, ctx)
                arch = self._architecture(s, spec, params, flops)
                rows = []
                for i, batch in enumerate(result["batches"]):
                    bs = int(batch["batch_size"])
                    rows.append(
                        EdgeMeasurement(
                            network_architecture_id=arch.id,
                            device_id=device.id,
                            batch_size=bs,
                            latency_ms=float(batch["compute"]["stats"]["median_ms"]),
                            results=dict(result),
                            context_key=ctx.context_key(
                                spec.arch_id,
                                result["onnx_sha256"],
                                result["precision"],
                                bs,
                                result.get("protocol"),
                            ),
                            onnx_sha256=result["onnx_sha256"],
                            backend=ctx.backend,
                            precision=result["precision"],
                            runtime_key=ctx.runtime_key,
                            power_mode=ctx.power_mode,
                            software_versions=dict(ctx.device.get("versions") or {}),
                            task_id=None if task_id is None else f"{task_id}#{i}",
                        )
                    )
                s.add_all(rows)
                s.flush()
                return [self._detach(r, spec.arch_id, ctx.name) for r in rows]
        except IntegrityError:
            if task_id is None:
                raise
            return self.by_task(task_id)

    def _device(self, s: Session, ctx: DeviceContext) -> EdgeDevice:
        device = s.scalar(select(EdgeDevice).where(EdgeDevice.device_key == ctx.device_key))
        if device is None:
            device = EdgeDevice(
                device_key=ctx.device_key,
                name=ctx.name,
                model=ctx.model,
                fingerprint=dict(ctx.device),
            )
            s.add(device)
            s.flush()
        return device

    def _architecture(
        self, s: Session, spec: ArchSpec, params: int | None, flops: int | None
    ) -> NetworkArchitecture:
        arch = s.scalar(
            select(NetworkArchitecture).where(NetworkArchitecture.arch_id == spec.arch_id)
        )
        if arch is None:
            arch = NetworkArchitecture(
                arch_id=spec.arch_id, space=spec.space, spec=spec.to_dict(), params=params
            )
            arch.flops = flops
            s.add(arch)
            s.flush()
        elif arch.params is None and params is not None:
            arch.params, arch.flops = params, flops
        return arch

    # --- reads ------------------------------------------------------------------------------

    def find(
        self,
        ctx: DeviceContext,
        arch_id: str,
        onnx_sha256: str,
        precision: str,
        batch_size: int,
        *,
        protocol: Mapping[str, Any] | None,
    ) -> Measurement | None:
        """The latest measurement with exactly this context (``protocol``: the JSON of the
        protocol to run, as a result records it), or None."""
        key = ctx.context_key(arch_id, onnx_sha256, precision, batch_size, protocol)
        with self._session("looking up a measurement") as s:
            row = s.scalar(
                select(EdgeMeasurement)
                .where(EdgeMeasurement.context_key == key)
                .order_by(EdgeMeasurement.id.desc())
                .limit(1)
            )
            return None if row is None else self._detach(row, arch_id, ctx.name)

    def by_task(self, task_id: str) -> list[Measurement]:
        with self._session("reading measurements") as s:
            rows = s.execute(
                select(EdgeMeasurement, NetworkArchitecture.arch_id, EdgeDevice.name)
                .join(NetworkArchitecture)
                .join(EdgeDevice)
                .where(EdgeMeasurement.task_id.like(f"{task_id}#%"))
                .order_by(EdgeMeasurement.id)
            ).all()
            return [self._detach(m, a, d) for m, a, d in rows]

    def measurements(self, arch_id: str | None = None) -> list[Measurement]:
        """Every measurement (of one architecture), oldest first."""
        with self._session("reading measurements") as s:
            q = (
                select(EdgeMeasurement, NetworkArchitecture.arch_id, EdgeDevice.name)
                .join(NetworkArchitecture)
                .join(EdgeDevice)
                .order_by(EdgeMeasurement.id)
            )
            if arch_id is not None:
                q = q.where(NetworkArchitecture.arch_id == arch_id)
            return [self._detach(m, a, d) for m, a, d in s.execute(q).all()]

    def devices(self) -> list[dict[str, Any]]:
        with self._session("reading devices") as s:
            return [
                {"name": d.name, "model": d.model, "device_key": d.device_key, **d.fingerprint}
                for d in s.scalars(select(EdgeDevice).order_by(EdgeDevice.id))
            ]

    def architecture(self, arch_id: str) -> dict[str, Any] | None:
        with self._session("reading an architecture") as s:
            a = s.scalar(select(NetworkArchitecture).where(NetworkArchitecture.arch_id == arch_id))
            if a is None:
                return None
            return {"arch_id": a.arch_id, "space": a.space, "spec": a.spec, "params": a.params}

    def delete_architecture(self, arch_id: str) -> bool:
        """Forget an architecture and (cascade) its measurements."""
        with self._session("deleting an architecture") as s:
            a = s.scalar(select(NetworkArchitecture).where(NetworkArchitecture.arch_id == arch_id))
            if a is None:
                return False
            s.delete(a)
            return True

    @staticmethod
    def _detach(row: EdgeMeasurement, arch_id: str, device_name: str) -> Measurement:
        return Measurement(
            id=row.id,
            arch_id=arch_id,
            device_name=device_name,
            batch_size=row.batch_size,
            latency_ms=row.latency_ms,
            results=dict(row.results),
            context_key=row.context_key,
            task_id=row.task_id,
        )


def _sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _safe(url: str) -> str:
    from hpc2edge.config import mask_url

    return mask_url(url)


__all__ = [
    "DeviceContext",
    "EdgeDevice",
    "EdgeMeasurement",
    "Measurement",
    "MeasurementStore",
    "NetworkArchitecture",
    "StoreError",
]
