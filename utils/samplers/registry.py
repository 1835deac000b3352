"""One registry of query strategies for every script.

A strategy is either a *scorer* (``ctx -> scores[len(candidates)]``, higher = queried first;
the query is the top ``query_size``) or a *selector* (``ctx -> positions in candidates``).
Both are registered under a name plus aliases (the seeds' spellings); lookup ignores case.
"""

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
import torch

from utils.core import distributed
from utils.core.cli import UserError
from utils.core.registry import Registry
from utils.core.train import mc_dropout_probs, predict


@dataclass
class QueryContext:
    """What a strategy may read: the trained model, the data (scored on the plain view), the
    labeled set, the ``candidates`` to choose from (the pool or a random subset of it),
    ``query_size``, an RNG, ``mc_samples`` (K of MC dropout) and script-specific ``extras``
    (e.g. ``previous_model``, ``loss_module``, ``ensemble``).

    The inference results strategies share are computed once and cached: ``probs()`` and
    ``features()`` of the candidates (one pass), ``labeled_features()``, ``mc_probs()``.
    """

    model: torch.nn.Module
    data: object
    labeled_idx: np.ndarray
    candidates: np.ndarray
    query_size: int
    dist: distributed.Dist
    batch_size: int = 128
    workers: int = 0
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(np.random.randint(2**31)))
    extras: dict = field(default_factory=dict)
    mc_samples: int = 10
    _cache: dict = field(default_factory=dict, repr=False)

    def predict(self, fn: Callable, indices: np.ndarray | None = None, model: torch.nn.Module | None = None,
                forward: Callable | None = None, transform: Callable | None = None) -> torch.Tensor:
        """``fn(model_output, targets)`` over ``indices`` (default: the candidates); ``forward(x)``
        replaces ``model(x)``, ``transform`` the plain view (see utils.core.train.predict)."""
        indices = self.candidates if indices is None else indices
        return predict(model or self.model, self.data, indices, fn, self.batch_size, self.dist, self.workers,
                       forward=forward, transform=transform)

    def _cached(self, key, compute):
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def _probs_and_features(self):
        def both(out, _targets):
            return torch.cat([torch.softmax(out.logits.float(), dim=1), out.features.float()], dim=1)

        joined = self._cached("pool", lambda: self.predict(both))
        classes = self.data.num_classes
        return joined[:, :classes], joined[:, classes:]

    def probs(self) -> torch.Tensor:
        """Softmax outputs of the candidates, ``[N, C]`` (eval mode)."""
        return self._probs_and_features()[0]

    def features(self) -> torch.Tensor:
        """Penultimate embeddings of the candidates, ``[N, D]``."""
        return self._probs_and_features()[1]

    def labeled_features(self) -> torch.Tensor:
        """Penultimate embeddings of the labeled set, ``[L, D]``."""
        if len(self.labeled_idx) == 0:
            return self.features()[:0]
        return self._cached("labeled", lambda: self.predict(lambda out, _y: out.features.float(), self.labeled_idx))

    def mc_probs(self, consistent: bool = True) -> torch.Tensor:
        """``[K, N, C]`` softmax outputs of K MC-dropout passes over the candidates (dropout on,
        BatchNorm in eval mode): one mask per pass shared by all candidates (``consistent``, as
        BatchBALD needs) or an independent mask per candidate and pass (``consistent=False``, for
        BALD and the *Dropout scores); see utils.core.train.mc_dropout_probs."""
        return self._cached("mc_consistent" if consistent else "mc", lambda: mc_dropout_probs(
            self.model, self.data, self.candidates, self.mc_samples, self.batch_size, self.dist, self.workers,
            seed=int(self.rng.integers(2**31)), consistent=consistent))


@dataclass(frozen=True)
class Strategy:
    name: str
    scores: Callable | None = None  # ctx -> Tensor[len(candidates)]
    positions: Callable | None = None  # ctx -> positions into ctx.candidates
    aliases: tuple = ()
    needs: tuple = ()  # keys ctx.extras must hold
    training: Callable | None = None  # a utils.samplers.hooks.TrainingHook class the protocol runs per round
    pool_subset: int | None = None  # the query looks at a random subset of this many unlabeled samples
    fixed_size: bool = True  # False: a selector that may return fewer than query_size (CCAL's per-class quota)

    def provides(self) -> set:
        """The extras this strategy's own training hook fills."""
        return set(self.training.PROVIDES) if self.training else set()

    def missing(self, provides) -> list:
        """The ``needs`` neither ``provides`` (what a script gives) nor the training hook cover."""
        return sorted(set(self.needs) - set(provides) - self.provides())

    def candidates(self, pool_idx: np.ndarray) -> np.ndarray:
        """The pool, or a random subset of ``pool_subset`` of it (sorted), drawn from numpy's global RNG."""
        pool_idx = np.asarray(pool_idx)
        if self.pool_subset and len(pool_idx) > self.pool_subset:
            return np.sort(pool_idx[np.random.permutation(len(pool_idx))[: self.pool_subset]])
        return pool_idx

    def select(self, ctx: QueryContext, lowest: bool = False) -> np.ndarray:
        """``query_size`` distinct candidate indices (dataset indices; at most ``query_size`` for a
        selector without ``fixed_size``); rank 0 decides. ``lowest`` takes the lowest scores
        instead (scorers only)."""
        missing = [k for k in self.needs if k not in ctx.extras]
        if missing:
            raise UserError(f"strategy {self.name} needs {', '.join(missing)}, which this script does not provide")
        if ctx.query_size > len(ctx.candidates):
            raise UserError(f"query size {ctx.query_size} is larger than the {len(ctx.candidates)} "
                            "candidates left in the pool")
        if self.scores is not None:
            positions = top_k(self.scores(ctx), ctx.query_size, largest=not lowest)
        elif lowest:
            raise ValueError(f"strategy {self.name} ranks no scores; lowest=True needs a scorer")
        else:
            positions = self.positions(ctx)
        chosen = ctx.candidates[np.asarray(positions, dtype=np.int64)]
        if len(np.unique(chosen)) != len(chosen) or len(chosen) > ctx.query_size or (
                self.fixed_size and len(chosen) != ctx.query_size):
            raise RuntimeError(f"strategy {self.name} returned {len(np.unique(chosen))} distinct indices, "
                               f"expected {ctx.query_size}")
        return distributed.broadcast_indices(chosen, ctx.dist)


def top_k(scores: torch.Tensor, k: int, largest: bool = True) -> np.ndarray:
    """Positions of the ``k`` largest (smallest) scores; ties keep the lower position first."""
    scores = torch.as_tensor(scores)
    order = torch.argsort(scores, descending=largest, stable=True)
    return order[:k].numpy()


_REGISTRY = {}  # name -> Strategy
_NAMES = Registry("strategy")  # every name and alias, lower-cased -> name


def _register(strategy):
    for key in (strategy.name, *strategy.aliases):
        _NAMES.add(key, strategy.name)
    _REGISTRY[strategy.name] = strategy
    return strategy


def register_scorer(name: str, aliases: tuple = (), needs: tuple = (), training: Callable | None = None,
                    pool_subset: int | None = None) -> Callable:
    """Register ``fn(ctx) -> scores`` (higher = queried first) under ``name`` and ``aliases``."""
    def decorate(fn):
        _register(Strategy(name, scores=fn, aliases=tuple(aliases), needs=tuple(needs), training=training,
                           pool_subset=pool_subset))
        return fn
    return decorate


def register_selector(name: str, aliases: tuple = (), needs: tuple = (), training: Callable | None = None,
                      pool_subset: int | None = None, fixed_size: bool = True) -> Callable:
    """Register ``fn(ctx) -> positions into ctx.candidates`` under ``name`` and ``aliases``."""
    def decorate(fn):
        _register(Strategy(name, positions=fn, aliases=tuple(aliases), needs=tuple(needs), training=training,
                           pool_subset=pool_subset, fixed_size=fixed_size))
        return fn
    return decorate


def get_strategy(name: str, provides: Iterable | None = None, where: str = "this script", hint: str = "",
                 runs_hooks: bool = True) -> Strategy:
    """The strategy registered as ``name`` (any case, or an alias). With ``provides`` (the extras a
    script gives its strategies), a strategy needing more stops with one line naming what is
    missing (``hint`` appended), before anything runs; a script that does not run training hooks
    (``runs_hooks=False``) refuses the strategies that train networks of their own."""
    strategy = _REGISTRY[_NAMES.find(name, list_strategies())]
    if provides is not None:
        if strategy.training is not None and not runs_hooks:
            raise UserError(f"strategy {strategy.name} trains networks of its own with the classifier, which "
                            f"{where} does not run; use main_al.py")
        missing = strategy.missing(provides)
        if missing:
            raise UserError(f"strategy {strategy.name} needs {', '.join(missing)}, which {where} does not provide"
                            + hint)
    return strategy


def list_strategies() -> list:
    return sorted(_REGISTRY)
