"""The bounded sampler history (hpc2edge.search.history): what TPE fits on once a study is
larger than the window, that a study within the window samples exactly as bare TPE does, and
that the elite is the study's best fronts."""

from __future__ import annotations

import random
from typing import Any

import pytest

optuna = pytest.importorskip("optuna")

from optuna.samplers import TPESampler  # noqa: E402
from optuna.samplers._tpe import sampler as tpe_module  # noqa: E402
from optuna.study import StudyDirection  # noqa: E402
from optuna.trial import TrialState, create_trial  # noqa: E402

from hpc2edge.search.history import BoundedHistory, best_fronts, bounded  # noqa: E402
from hpc2edge.search.objectives import CONSTRAINT_ATTR  # noqa: E402

pytestmark = pytest.mark.unit

MIN2 = [StudyDirection.MINIMIZE] * 2


def _tpe(seed: int = 0) -> TPESampler:
    # the product's settings (hpc2edge.search.study.make_sampler)
    return TPESampler(
        seed=seed, n_startup_trials=4, multivariate=True, group=True, constant_liar=True
    )


def _objective(trial: optuna.Trial) -> tuple[float, float]:
    x = trial.suggest_float("x", 0.0, 1.0)
    blocks = trial.suggest_int("blocks", 1, 3)
    width = trial.suggest_categorical(f"width{blocks}", [8, 16, 32])  # a conditional parameter
    return (x - 0.3) ** 2 + 1.0 / width, x * blocks + width / 32


def _asks(sampler: optuna.samplers.BaseSampler, n: int, running: int = 3) -> list[dict[str, Any]]:
    """Params of ``n`` trials asked with ``running`` always in flight (the constant liar's case)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    pending: list[optuna.Trial] = []
    out = []
    for _ in range(n):
        trial = study.ask()
        values = _objective(trial)
        out.append(dict(trial.params))
        pending.append((trial, values))  # type: ignore[arg-type]
        if len(pending) > running:
            t, v = pending.pop(0)  # type: ignore[misc]
            study.tell(t, v)
    return out


def test_within_the_window_the_asks_are_bare_tpes() -> None:
    assert _asks(BoundedHistory(_tpe(), window=40, elite=8), 40) == _asks(_tpe(), 40)


def test_over_the_window_tpe_fits_on_at_most_window_finished_trials(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fitted: list[int] = []
    build = TPESampler._build_parzen_estimator

    def spy(self: TPESampler, study: Any, search_space: Any, trials: list[Any], **kw: Any) -> Any:
        fitted.append(sum(t.state != TrialState.RUNNING for t in trials))
        return build(self, study, search_space, trials, **kw)

    monkeypatch.setattr(TPESampler, "_build_parzen_estimator", spy)
    window = 20
    _asks(BoundedHistory(_tpe(), window=window, elite=5), 60)
    # below + above per fit; every fit of the second half sees at most `window` finished trials
    assert fitted and max(fitted) <= 2 * window  # two estimators per fit, each a part
    pairs = [fitted[i] + fitted[i + 1] for i in range(0, len(fitted) - 1, 2)]
    assert max(pairs) <= window
    assert pairs[-1] == window  # and it is full: the window, not less


def test_the_view_keeps_the_studys_pareto_front_and_the_running() -> None:
    history = BoundedHistory(_tpe(), window=12, elite=4)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=history)
    rng = random.Random(0)
    for _ in range(50):
        t = study.ask()
        study.tell(t, (rng.random(), rng.random()))
    running = study.ask()
    seen = history.view(study).get_trials(deepcopy=False)
    finished = [t for t in seen if t.state.is_finished()]
    assert len(finished) == 12
    assert running.number in {t.number for t in seen}
    front = {t.number for t in study.best_trials}
    assert front <= {t.number for t in seen}
    # the rest are the most recent finished trials
    rest = sorted(t.number for t in finished if t.number not in front)
    assert rest == sorted(rest)[-len(rest) :] and max(rest) == 49


def test_infeasible_trials_are_never_elite() -> None:
    history = BoundedHistory(_tpe(), window=6, elite=2)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=history)
    dominant = create_trial(values=[0.0, 0.0], user_attrs={CONSTRAINT_ATTR: 1.0})
    study.add_trial(dominant)  # over budget: dominates all, but infeasible
    rng = random.Random(1)
    for _ in range(20):
        study.add_trial(create_trial(values=[1 + rng.random(), 1 + rng.random()]))
    study.add_trial(create_trial(state=TrialState.PRUNED))
    seen = {t.number for t in history.view(study).get_trials(deepcopy=False)}
    assert 0 not in seen  # old, infeasible: neither elite nor recent
    assert 21 in seen  # the pruned one is recent


def _brute_fronts(points: list[tuple[float, ...]]) -> list[int]:
    """Ranks by peeling fronts, the definition."""
    rank = [-1] * len(points)
    left = set(range(len(points)))
    r = 0
    while left:
        front = {
            i
            for i in left
            if not any(
                all(a <= b for a, b in zip(points[j], points[i], strict=True))
                and points[j] != points[i]
                for j in left
            )
        }
        for i in front:
            rank[i] = r
        left -= front
        r += 1
    return rank


@pytest.mark.parametrize("seed", range(5))
def test_best_fronts_are_whole_fronts_best_first(seed: int) -> None:
    rng = random.Random(seed)
    pts = [(round(rng.random(), 1), round(rng.random(), 1)) for _ in range(40)]  # with ties
    trials = [create_trial(values=list(p)) for p in pts]
    got = best_fronts(trials, MIN2, 10)
    ranks = _brute_fronts(pts)
    chosen = {id(t) for t in got}
    worst = max(ranks[i] for i, t in enumerate(trials) if id(t) in chosen)
    assert len(got) >= 10
    assert all((ranks[i] <= worst) == (id(t) in chosen) for i, t in enumerate(trials))
    assert worst == 0 or sum(r < worst for r in ranks) < 10  # no more fronts than needed


def test_best_fronts_follow_the_directions_and_one_objective() -> None:
    trials = [create_trial(values=[v, -v]) for v in (3.0, 1.0, 2.0)]
    best = best_fronts(trials, [StudyDirection.MINIMIZE, StudyDirection.MAXIMIZE], 1)
    assert [t.values for t in best] == [[1.0, -1.0]]
    single = [create_trial(value=v) for v in (3.0, 1.0, 2.0, 0.5)]
    assert [t.value for t in best_fronts(single, [StudyDirection.MAXIMIZE], 2)] == [3.0, 2.0]


def test_the_elite_folded_one_trial_at_a_time_is_the_elite_of_all() -> None:
    """Folding incrementally gives the same first fronts as computing them over everything."""
    history = BoundedHistory(_tpe(), window=10, elite=6)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=history)
    rng = random.Random(2)
    for _ in range(80):
        study.add_trial(create_trial(values=[rng.random(), rng.random()]))
        history.view(study).get_trials(deepcopy=False)  # fold as an ask would
    everything = study.get_trials(deepcopy=False)
    fresh = BoundedHistory(_tpe(), window=10, elite=6)
    fresh.view(study).get_trials(deepcopy=False)  # all at once, as after a restart
    assert {t.number for t in history._elite} == {t.number for t in fresh._elite}
    front0 = {t.number for t in best_fronts(everything, MIN2, 1)}
    assert front0 <= {t.number for t in history._elite}


def test_bad_windows_are_refused_and_zero_means_unbounded() -> None:
    with pytest.raises(ValueError, match="elite < window"):
        BoundedHistory(_tpe(), window=5, elite=5)
    sampler = _tpe()
    assert bounded(sampler, None) is sampler and bounded(sampler, 0) is sampler
    assert isinstance(bounded(sampler, 100), BoundedHistory)


def test_tpe_still_reads_trials_only_through_the_view() -> None:
    """The contract the wrapper relies on: if a later Optuna's TPE read the storage directly,
    the window would silently stop working; this fails first."""
    calls = []
    real = tpe_module.TPESampler._sample

    def spy(self: Any, study: Any, trial: Any, search_space: Any) -> Any:
        calls.append(type(study).__name__)
        return real(self, study, trial, search_space)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(tpe_module.TPESampler, "_sample", spy)
        _asks(BoundedHistory(_tpe(), window=10, elite=3), 14)
    assert calls and set(calls) == {"_StudyView"}


def test_the_products_tpe_is_bounded() -> None:
    from hpc2edge.search import study as st
    from hpc2edge.search.history import DEFAULT_WINDOW
    from hpc2edge.search.objectives import Objective

    sampler = st.make_sampler("tpe", Objective("pareto"), seed=0, trials=64)
    assert isinstance(sampler, BoundedHistory) and sampler.window == DEFAULT_WINDOW
    assert isinstance(sampler.sampler, TPESampler)


def test_a_resumed_study_folds_thousands_of_trials_in_chunks_to_the_same_elite(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from hpc2edge.search import history

    study = optuna.create_study(directions=["minimize", "minimize"])
    rng = random.Random(3)
    for _ in range(300):
        study.add_trial(create_trial(values=[rng.random(), rng.random()]))
    whole = BoundedHistory(_tpe(), window=50, elite=10)
    whole.view(study).get_trials(deepcopy=False)
    monkeypatch.setattr(history, "_FOLD_CHUNK", 7)
    chunked = BoundedHistory(_tpe(), window=50, elite=10)
    chunked.view(study).get_trials(deepcopy=False)
    assert {t.number for t in chunked._elite} == {t.number for t in whole._elite}
