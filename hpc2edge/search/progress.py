"""What a running search shows: a tqdm bar in a terminal, one plain line per event elsewhere.

:class:`Progress` is an orchestrator callback
(:attr:`hpc2edge.search.orchestrator.Orchestrator.callbacks`), called as ``progress(event, job)``
for ``sent``, ``cached``, ``measured``, ``trained`` and ``finished``. It has two renderers:

- **bar** (a terminal): a tqdm bar of trials finished out of ``config.trials``, with tqdm's
  elapsed time, rate and ETA, and a postfix (in flight per queue, front size, best loss, pruned
  and failed) updated on every event, and redrawn at most every ``redraw_s`` on a tick, so that
  the elapsed time moves through a silent stretch (an hour of training). A trial's ``finished``
  line is written above the bar, and while the bar is up, warnings of the ``hpc2edge`` loggers
  are too (they would break it otherwise).
- **plain** (a log file, a pipe, ``--log-format plain``): one line per event, each led by the
  seconds since the start, and after each finished trial (and on a tick when nothing was printed
  for ``every_s``) a status line with the same numbers as the bar.

Progress is a view: no exception leaves it. The orchestrator calls its callbacks inside the loop,
so one that raised would end the search; here the first failure prints one line and the search
goes on.

Ticks: the orchestrator emits ``tick`` (with no job) once per step of its loop, which
:meth:`Progress.tick` handles; everything runs in the loop's thread, so reading the
orchestrator's state is safe.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TextIO

from tqdm import tqdm

from hpc2edge.search import records

#: ``--log-format``: auto is bar when the stream is a terminal, else plain.
FORMATS = ("auto", "bar", "plain")


def choose_format(log_format: str, stream: Any) -> str:
    """``bar`` or ``plain`` for ``log_format`` (``auto``: bar when ``stream`` is a terminal)."""
    if log_format not in FORMATS:
        raise ValueError(f"log format must be one of {FORMATS}, not {log_format!r}")
    if log_format != "auto":
        return log_format
    isatty = getattr(stream, "isatty", None)
    try:
        return "bar" if callable(isatty) and isatty() else "plain"
    except (OSError, ValueError):  # a closed or detached stream
        return "plain"


@dataclass(frozen=True)
class Snapshot:
    """The numbers a status line and the bar's postfix show, read at one moment."""

    done: int
    total: int
    complete: int
    pruned: int
    failed: int
    in_flight: int
    in_flight_by_queue: dict[str, int]
    front_size: int
    best_loss: float | None


class Progress:
    """Shows a search's progress on ``stream`` (stderr); see the module docstring.

    Args:
        orchestrator: what is shown; read through ``counts()``, ``front()``, ``config.trials``
            and ``dispatcher.queue_depths()``.
        log_format: ``auto``, ``bar`` or ``plain``.
        stream: where to write (default: ``sys.stderr`` at construction).
        every_s: plain mode: at most this long without a line while ticks come.
        redraw_s: bar mode: ticks redraw the bar at most this often.
        clock: monotonic seconds, for the elapsed time, the rate of plain lines and throttling.
    """

    def __init__(
        self,
        orchestrator: Any,
        *,
        log_format: str = "auto",
        stream: TextIO | None = None,
        every_s: float = 60.0,
        redraw_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.o = orchestrator
        self.stream = stream if stream is not None else sys.stderr
        self.mode = choose_format(log_format, self.stream)
        self.every_s = every_s
        self.redraw_s = redraw_s
        self.clock = clock
        self.t0 = clock()
        self._last_line_t = self.t0
        self._last_draw_t = self.t0
        self._finished_here = 0  # trials finished while this Progress watched (for the rate)
        self._announced: set[str] = set()  # task ids already reported as sent
        self._front: tuple[int | None, int, float | None] = (None, 0, None)
        self._last_status: Snapshot | None = None
        self._failures = 0
        self._closed = False
        self._bar: Any = None
        self._bar_initial: int | None = None
        self._log_handler: logging.Handler | None = None
        if self.mode == "bar":
            self._guard(self._open_bar)

    # --- the callback and its hooks -----------------------------------------------------------

    def __call__(self, event: str, job: Any) -> None:
        """The orchestrator callback: show ``event`` for ``job``; never raises."""
        if event == "tick" or job is None:
            self.tick()
            return
        self._guard(lambda: self._on_event(event, job))

    def tick(self) -> None:
        """The periodic hook: redraw the bar, or a status line when ``every_s`` passed quietly."""

        def run() -> None:
            now = self.clock()
            if self._bar is not None:
                if now - self._last_draw_t >= self.redraw_s:
                    self._update_bar(self.snapshot())
            elif now - self._last_line_t >= self.every_s:
                self._status_line()

        self._guard(run)

    def close(self, *, finished: bool = True) -> None:
        """The end: a last status line (plain), or the bar at its final state; idempotent.

        ``finished`` False (the run stopped on an error, which is printed next): no last line.
        """
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            if finished:
                self._guard(lambda: self._update_bar(self.snapshot()))
            self._guard(self._bar.close)
        elif finished:
            self._guard(lambda: self._status_line(unless_shown=True))
        if self._log_handler is not None:
            logging.getLogger("hpc2edge").removeHandler(self._log_handler)
            self._log_handler = None

    # --- what is shown ------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        """The counts (in memory) and the front (read from the study only when it can change)."""
        p = self.o.counts()
        complete = int(p["complete"])
        if self._front[0] != complete:  # only a trial that completes moves the front
            front = self.o.front()
            best = min(t.values[0] for t in front) if front else None
            self._front = (complete, len(front), best)
        return Snapshot(
            done=complete + int(p["pruned"]) + int(p["failed"]),
            total=int(self.o.config.trials),
            complete=complete,
            pruned=int(p["pruned"]),
            failed=int(p["failed"]),
            in_flight=int(p["in_flight"]),
            in_flight_by_queue=dict(p.get("in_flight_by_queue") or {}),
            front_size=self._front[1],
            best_loss=self._front[2],
        )

    def _on_event(self, event: str, job: Any) -> None:
        state = _state(job)
        finished = event == "finished"
        if finished and job.label != "baseline":  # the baseline is not one of the trials
            self._finished_here += 1
        line = self._event_line(event, job, state)
        if self._bar is not None:
            if finished:  # above the bar; the other events show in its postfix
                self._bar.write(self._stamp(line), file=self.stream)
            self._update_bar(self.snapshot())
            return
        self._print(line)
        if finished:
            self._status_line()

    def _event_line(self, event: str, job: Any, state: str) -> str:
        a = job.attrs
        if event == "finished":
            if state == "complete":
                what = f"val MSE {_num(a.get('val_mse'), '.5f')}, {_num(a.get('latency_ms'))} ms"
                if records.cached(a):
                    what += " (latency from the store)"
            else:
                what = a.get("reason", "")
            dup = f" (same network as {a['duplicate_of']})" if a.get("duplicate_of") else ""
            return f"{job.label} {state}{dup}: {what}"
        if event == "sent":
            return f"{job.label}: {self._sent_what(job)}"
        if event == "cached":
            return f"{job.label}: latency from the store, {_num(a.get('latency_ms'))} ms"
        if event == "measured":
            return f"{job.label}: measured on the edge, {_num(a.get('latency_ms'))} ms"
        if event == "trained":
            return f"{job.label}: trained, val MSE {_num(a.get('val_mse'), '.5f')}"
        return f"{job.label}: {event}"

    def _sent_what(self, job: Any) -> str:
        """Which task was just sent: the newest sent stage task not reported yet (records of a
        resumed run's earlier sends are older than the one just sent)."""
        new = []
        for stage in self.o.pipeline.stages:
            rec = records.readable_task(job.attrs, stage.name)
            if rec is None or not rec.sent or rec.id in self._announced:
                continue
            new.append((rec.sent_at or 0.0, stage.name, stage.queue, rec))
        if not new:
            return "task sent"
        self._announced.update(str(t[3].id) for t in new)
        _, name, queue, rec = max(new, key=lambda t: t[0])
        again = f" (attempt {rec.attempt})" if rec.attempt > 1 else ""
        return f"{name} sent to the {queue} queue{again}"

    def _status_line(self, *, unless_shown: bool = False) -> None:
        s = self.snapshot()
        if unless_shown and s == self._last_status:
            return
        self._last_status = s
        done = f"done {s.done}/{s.total} (complete {s.complete}, pruned {s.pruned}, "
        done += f"failed {s.failed})"
        elapsed = self.clock() - self.t0
        if self._finished_here and elapsed > 0:
            per_min = self._finished_here / elapsed * 60.0
            eta = max(0, s.total - s.done) / (per_min / 60.0)
            done += f", {per_min:.3g} trials/min, ETA {_duration(eta)}"
        line = f"{done} | {_in_flight(s)}"
        mine = self.o.pipeline.queues  # not every kind's queue: this search's
        depths = {q: n for q, n in self.o.dispatcher.queue_depths().items() if q in mine}
        if depths:
            line += " | queued: " + ", ".join(f"{q} {n}" for q, n in sorted(depths.items()))
        if s.best_loss is not None:
            line += f" | front {s.front_size}, best loss {s.best_loss:.5f}"
        self._print(line)

    def _postfix(self, s: Snapshot) -> str:
        parts = [_in_flight(s)]
        if s.best_loss is not None:
            parts.append(f"front {s.front_size}, best loss {s.best_loss:.5f}")
        if s.pruned or s.failed:
            parts.append(f"pruned {s.pruned}, failed {s.failed}")
        return " | ".join(parts)

    # --- output -------------------------------------------------------------------------------

    def _stamp(self, line: str) -> str:
        return f"[{self.clock() - self.t0:7.1f} s] {line}"

    def _print(self, line: str) -> None:
        self._last_line_t = self.clock()
        print(self._stamp(line), file=self.stream, flush=True)

    def _open_bar(self) -> None:
        self._bar = tqdm(
            total=int(self.o.config.trials),
            desc="trials",
            unit="trial",
            file=self.stream,
            dynamic_ncols=True,
            smoothing=0,  # trials are slow and uneven: the average rate is the better ETA
            disable=False,
            leave=True,
        )
        root, ours = logging.getLogger(), logging.getLogger("hpc2edge")
        if not root.handlers and not ours.handlers:
            # Nobody configured logging: warnings would go to stderr through logging's last
            # resort and break the bar. Write them above it while it is up (undone by close).
            self._log_handler = _AboveTheBar(self._bar, self.stream)
            ours.addHandler(self._log_handler)

    def _update_bar(self, s: Snapshot) -> None:
        bar = self._bar
        if self._bar_initial is None:
            # Trials finished before this run (a resumed study) do not count for the rate.
            self._bar_initial = max(0, s.done - self._finished_here)
            bar.initial = self._bar_initial
        bar.n = s.done
        bar.set_postfix_str(self._postfix(s))  # redraws
        self._last_draw_t = self.clock()

    def _guard(self, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except Exception as exc:  # a view never stops the search
            self._failures += 1
            if self._failures == 1:
                notice = (
                    f"progress: cannot show the progress ({type(exc).__name__}: {exc}); "
                    "the search goes on"
                )
                with contextlib.suppress(Exception):  # the stream itself may be what broke
                    if self._bar is not None:
                        self._bar.write(notice, file=self.stream)  # on a line of its own
                    else:
                        print(notice, file=self.stream, flush=True)


class _AboveTheBar(logging.Handler):
    """Writes warnings (and worse) above a tqdm bar instead of through it."""

    def __init__(self, bar: Any, stream: Any) -> None:
        super().__init__(logging.WARNING)
        self.bar = bar
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.bar.write(self.format(record), file=self.stream)
        except Exception:
            self.handleError(record)


def _state(job: Any) -> str:
    """A job's state as its plain value (``complete``), a str or a str Enum."""
    return str(getattr(job.state, "value", job.state))


def _in_flight(s: Snapshot) -> str:
    if s.in_flight_by_queue:
        per = ", ".join(f"{q} {n}" for q, n in sorted(s.in_flight_by_queue.items()))
        return f"in flight: {per}"
    return f"in flight {s.in_flight}"


def _num(value: Any, spec: str = ".3f") -> str:
    return format(value, spec) if isinstance(value, (int, float)) else "?"


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


__all__ = ["FORMATS", "Progress", "Snapshot", "choose_format"]
