"""The one exception tree of hpc2edge.

Foreign errors (redis, kombu, ssl, cryptography, and later h5py, onnxruntime, TensorRT) are
translated into these at the boundary of the module that calls the foreign library, so callers
and the CLI handle one family::

    Hpc2EdgeError
    ├── ConfigError          the configuration is invalid; lists every problem at once
    ├── TLSError             certificates missing, unreadable, or refusing to be overwritten
    ├── BrokerError          the broker cannot be reached, refused us, or could not be started
    │   └── BrokerUnreachable    no connection at all (network, TLS handshake, authentication)
    ├── StackError           the local stack (``hpc2edge up``) or a local service (Flower, the
    │                        dashboard) could not be started or stopped
    ├── StudyStorageError    a study storage (or measurement store) to read is missing or unreadable
    ├── DataError            a dataset file is missing, unreadable or malformed (names file/group)
    ├── SpecError            an unknown search space or a malformed architecture spec
    ├── ExportError          ONNX export failed or does not match PyTorch
    ├── ArtifactError        a content-addressed blob could not be stored or read back
    │   ├── ArtifactNotFound     no blob under that key (expired, never stored)
    │   ├── ArtifactCorrupt      the bytes read do not hash to their key
    │   └── ArtifactTooLarge     over the store's size cap
    ├── MeasurementError     a latency measurement could not be made (bad model, precision, device)
    │   ├── EngineBuildError     TensorRT could not build an engine from the ONNX model
    │   └── OutputMismatch       the model's outputs disagree with the reference outputs
    ├── TrainingError        a training run failed: crash, OOM, kill, timeout, NaN loss (log tail)
    └── TaskError            a task failed on a worker; carries the remote type name and message

Bad arguments to a function raise ``ValueError`` as usual. The CLI turns any ``Hpc2EdgeError``
into one line on stderr and a non-zero exit code (2 for configuration errors), never a traceback.
"""

from __future__ import annotations


def as_result(exc: BaseException, max_chars: int = 2000) -> dict[str, str]:
    """An error as it crosses the queue inside a result: its type name and (bounded) message."""
    return {"type": type(exc).__name__, "message": str(exc)[:max_chars]}


class Hpc2EdgeError(Exception):
    """Base class of every error hpc2edge raises on purpose."""

    exit_code = 1


class ConfigError(Hpc2EdgeError):
    """The configuration is invalid. ``problems`` lists each problem, one line each."""

    exit_code = 2

    def __init__(self, problems: list[str], source: str = "configuration") -> None:
        self.problems = list(problems)
        self.source = source
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(f"{source} has {count} {noun}:\n{lines}")


class TLSError(Hpc2EdgeError):
    """Certificates are missing, invalid, or would be overwritten."""


class BrokerError(Hpc2EdgeError):
    """The broker refused an operation or could not be started."""


class BrokerUnreachable(BrokerError):
    """No working connection to the broker: network, TLS handshake or authentication failed."""


class StackError(Hpc2EdgeError):
    """The local single-machine stack, or a local service, could not be brought up or down."""


class StudyStorageError(Hpc2EdgeError):
    """The study storage (or measurement store) to read does not exist or cannot be opened."""


class SearchError(Hpc2EdgeError):
    """The search cannot start or go on (a study that does not match, a study in use, ...)."""


class DataError(Hpc2EdgeError):
    """A dataset is missing, unreadable or malformed; the message names file, group and dataset."""


class SpecError(Hpc2EdgeError):
    """An unknown search space, or an architecture spec that does not belong to its space."""

    exit_code = 2


class ExportError(Hpc2EdgeError):
    """ONNX export failed, the checker rejected it, or ONNX Runtime disagrees with PyTorch."""


class ArtifactError(Hpc2EdgeError):
    """A content-addressed blob could not be stored or read back."""


class ArtifactNotFound(ArtifactError):
    """No blob is stored under the key (it expired or was never stored)."""


class ArtifactCorrupt(ArtifactError):
    """The bytes read back do not hash to the key they were stored under."""


class ArtifactTooLarge(ArtifactError):
    """The blob is larger than the store's size cap."""


class MeasurementError(Hpc2EdgeError):
    """A latency measurement could not be made: bad model, unsupported precision, no device."""


class EngineBuildError(MeasurementError):
    """TensorRT could not parse the ONNX model or build an engine from it."""


class OutputMismatch(MeasurementError):
    """The measured model's outputs differ from the reference outputs beyond the tolerance."""


class TrainingError(Hpc2EdgeError):
    """A training run failed: its process crashed, was killed (OOM), timed out, or diverged.

    The message ends with the tail of the training log when there is one.
    """


class TaskError(Hpc2EdgeError):
    """A task failed on a worker.

    Attributes:
        remote_type: the exception class name raised on the worker.
        remote_message: its message.
    """

    def __init__(self, remote_type: str, remote_message: str) -> None:
        self.remote_type = remote_type
        self.remote_message = remote_message
        super().__init__(f"{remote_type}: {remote_message}")
