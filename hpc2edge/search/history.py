"""A sampler that fits on a bounded history: the best trials and the most recent ones.

Why: Optuna's TPE reads, splits and fits on every trial of the study on every ask, once per
group of its decomposed search space. At fleet scale that makes the ask grow with the study
(measured with ``bench/search.py --fleet-trials 2000``, journal storage: 11, 60, 115 and 131 ms
per trial in the four quarters of a 2,000-trial run), until the orchestrator's loop, not the
workers, sets the pace (docs/decisions.md, "Fleet simulator": "TPE fits on a bounded
history").

:class:`BoundedHistory` wraps a sampler and shows it a view of the study whose trial list holds
at most ``window`` finished trials:

- the **elite**: the whole first non-domination fronts of the feasible completed trials, front
  after front, until they hold at least ``elite`` trials (for one objective: the ``elite`` best).
  TPE's "good" set is at most 25 trials (``default_gamma_multiobjective``), so with the default
  64 it is drawn from the same trials as over the whole study;
- the **most recent** finished trials (by number), up to ``window`` in all;
- every unfinished trial (RUNNING, WAITING): what the constant liar needs. Their number is
  bounded by the fleet, not by the study.

Below ``window`` finished trials the view is the study itself, so every search of up to
``window`` trials samples exactly as the wrapped sampler does; the elite is kept incrementally
(a finished trial never changes), so an ask costs the same at trial 500 and at trial 5,000.

Contract: the wrapped sampler reads trials only through ``study._get_trials`` (Optuna's own
samplers all do, and ``Study.get_trials`` calls it); everything else is the real study's.
``tests/unit/test_history.py`` checks that TPE's asks see only the view.
"""

from __future__ import annotations

import math
from collections.abc import Container, Sequence
from typing import Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from hpc2edge.search.objectives import CONSTRAINT_ATTR

#: Finished trials a sampler fits on, at most (a search of up to this many samples unchanged).
DEFAULT_WINDOW = 500
#: Of those, the best by non-domination rank (whole fronts, at least this many).
DEFAULT_ELITE = 64

_FINISHED = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
_FOLD_CHUNK = 512


class BoundedHistory(BaseSampler):
    """``sampler``, fitted on at most ``window`` finished trials (see the module docstring).

    Args:
        sampler: the sampler to wrap (TPE in the product).
        window: finished trials in the view, at most; >= ``elite`` + 1.
        elite: best trials always in the view; >= 1.
    """

    def __init__(
        self, sampler: BaseSampler, *, window: int = DEFAULT_WINDOW, elite: int = DEFAULT_ELITE
    ) -> None:
        if elite < 1 or window <= elite:
            raise ValueError(f"BoundedHistory: need 1 <= elite < window, got {elite}, {window}")
        self.sampler = sampler
        self.window = window
        self.elite = elite
        self._seen: set[int] = set()  # finished trial numbers already folded into the elite
        self._elite: list[FrozenTrial] = []
        self._finished_recent: list[FrozenTrial] = []  # the most recent, by number
        self._keep: frozenset[int] = frozenset()  # finished trial numbers in the view

    # --- the view -------------------------------------------------------------------------------

    def view(self, study: Study) -> Study:
        """The study as the wrapped sampler sees it."""
        return _StudyView(study, self)  # type: ignore[return-value]

    def select(self, study: Study, trials: Sequence[FrozenTrial]) -> list[FrozenTrial]:
        """The view of ``trials`` (some of the study's, in trial order), in trial order."""
        self._fold(study, trials)
        if len(self._seen) <= self.window:
            return list(trials)
        keep = self._keep
        return [t for t in trials if t.state not in _FINISHED or t.number in keep]

    def _fold(self, study: Study, trials: Sequence[FrozenTrial]) -> None:
        """Fold the finished trials of ``trials`` not seen before into the elite and the recent.

        From the list the sampler asked for, not from a read of its own: on an RDB storage every
        read goes to the database. The sampler asks for every finished state it fits on."""
        new = [t for t in trials if t.state in _FINISHED and t.number not in self._seen]
        if not new:
            return  # finished trials never change state again: nothing to do
        self._seen.update(t.number for t in new)
        recent = sorted(self._finished_recent + new, key=lambda t: t.number)
        self._finished_recent = recent[-self.window :]
        good = [t for t in new if _feasible_complete(t)]
        # In chunks: the best fronts of A + B are among those of (the best fronts of A) + B, and
        # a study resumed with thousands of trials must not build an n x n comparison at once.
        for i in range(0, len(good), _FOLD_CHUNK):
            chunk = good[i : i + _FOLD_CHUNK]
            self._elite = best_fronts(self._elite + chunk, study.directions, self.elite)
        keep = {t.number for t in self._elite}
        for t in reversed(self._finished_recent):
            if len(keep) >= self.window:
                break
            keep.add(t.number)
        self._keep = frozenset(keep)

    # --- BaseSampler, through the view ----------------------------------------------------------

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self.sampler.infer_relative_search_space(self.view(study), trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self.sampler.sample_relative(self.view(study), trial, search_space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self.sampler.sample_independent(
            self.view(study), trial, param_name, param_distribution
        )

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.sampler.before_trial(self.view(study), trial)

    def after_trial(
        self,
        study: Study,
        trial: FrozenTrial,
        state: TrialState,
        values: Sequence[float] | None,
    ) -> None:
        self.sampler.after_trial(self.view(study), trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()


class _StudyView:
    """The study with its trial list cut to the sampler's view; everything else is the study's."""

    def __init__(self, study: Study, history: BoundedHistory) -> None:
        self._study = study
        self._history = history

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
        use_cache: bool = False,
    ) -> list[FrozenTrial]:
        trials = self._study._get_trials(deepcopy=deepcopy, states=states, use_cache=use_cache)
        return self._history.select(self._study, trials)

    def get_trials(
        self,
        deepcopy: bool = True,
        states: Container[TrialState] | None = None,
    ) -> list[FrozenTrial]:
        return self._get_trials(deepcopy=deepcopy, states=states, use_cache=False)

    @property
    def trials(self) -> list[FrozenTrial]:
        return self.get_trials()


def _feasible_complete(trial: FrozenTrial) -> bool:
    """Complete, with finite values, and within every constraint (the product's user attribute
    and Optuna's own record of them)."""
    if trial.state != TrialState.COMPLETE or trial.values is None:
        return False
    if not all(math.isfinite(v) for v in trial.values):
        return False
    if (trial.user_attrs.get(CONSTRAINT_ATTR) or 0.0) > 0.0:
        return False
    native = getattr(trial, "constraints", None)  # a dict on Optuna >= 5
    values = native.values() if isinstance(native, dict) else ()
    return all(c <= 0 for c in values)


def best_fronts(
    trials: Sequence[FrozenTrial], directions: Sequence[StudyDirection], at_least: int
) -> list[FrozenTrial]:
    """Whole non-domination fronts of ``trials``, best first, until they hold ``at_least``
    (all of them when there are fewer). With one objective: the ``at_least`` best."""
    if len(trials) <= at_least:
        return list(trials)
    sign = np.array([-1.0 if d == StudyDirection.MAXIMIZE else 1.0 for d in directions])
    values = np.array([t.values for t in trials], dtype=float) * sign
    if values.shape[1] == 1:
        order = np.argsort(values[:, 0], kind="stable")[:at_least]
        return [trials[i] for i in sorted(order)]
    left = np.arange(len(trials))
    kept: list[int] = []
    while left.size and len(kept) < at_least:
        v = values[left]
        # i is dominated when some j is <= in every objective and < in one
        le = (v[None, :, :] <= v[:, None, :]).all(axis=2)
        lt = (v[None, :, :] < v[:, None, :]).any(axis=2)
        dominated = (le & lt).any(axis=1)
        kept.extend(left[~dominated].tolist())
        left = left[dominated]
    return [trials[i] for i in sorted(kept)]


def bounded(sampler: BaseSampler, window: int | None = DEFAULT_WINDOW) -> BaseSampler:
    """``sampler`` with a bounded history, or as it is when ``window`` is None or 0."""
    if not window:
        return sampler
    return BoundedHistory(sampler, window=window, elite=min(DEFAULT_ELITE, window - 1))


__all__ = ["DEFAULT_ELITE", "DEFAULT_WINDOW", "BoundedHistory", "best_fronts", "bounded"]
