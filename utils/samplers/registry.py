"""One registry of query strategies for every script.

A strategy is either a *scorer* (``ctx -> scores[len(candidates)]``, higher = queried first;
the query is the top ``query_size``) or a *selector* (``ctx -> positions in candidates``).
Both are registered under a name plus aliases (the seeds' spellings); lookup ignores case.

A strategy declares itself where it is registered (as timm's ``create_model`` or baal's
``get_heuristic`` take their keyword arguments): its parameters, typed and bounded keys of the
settings trees named ``<PREFIX>_<PARAM>`` (one default each; the rule reads them as
``ctx.params.<param>``), and what it needs from the script that runs it (:class:`Need`: a model
with dropout, an ensemble, the previous cycle's model, state kept across queries, ...). Every
script that runs strategies puts their keys into its settings tree (config.strategy_keys), so
``--set CORESET_OUTLIER_FRACTION=0.1`` is checked, listed and recorded like every key::

    @register_selector("CoreSet", params={"OUTLIER_FRACTION": Key(1e-4, "...", minimum=0, below=1)})
    def coreset(ctx):
        ... ctx.params.outlier_fraction ...
"""

import dataclasses
import enum
import functools
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np
import torch

from utils.core import distributed
from utils.core.config import Key
from utils.core.errors import UserError
from utils.core.registry import Registry
from utils.core.train import predict
from utils.samplers.mc_dropout import mc_dropout_probs


@dataclass
class QueryContext:
    """What a strategy may read: the trained model, the data (scored on the plain view), the
    labeled set, the ``candidates`` to choose from (the pool or a random subset of it),
    ``query_size``, an RNG, ``mc_samples`` (K of MC dropout), the run's ``settings`` of which the
    strategy reads its declared ones as ``params`` (a :class:`Params`, filled by Strategy.select; a
    key the settings lack takes its default), and what the script gives for the strategy's needs and
    its training hook produced (``extras``: e.g. ``previous_model``, ``loss_module``, ``ensemble``).

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
    settings: Mapping = field(default_factory=dict)  # the run's resolved settings (any mapping of keys)
    params: "Params | None" = None  # the strategy's own settings (Strategy.select takes them from ``settings``)
    cycle: int | None = None  # the cycle of the query, when a script runs cycles (TOD's rule differs at cycle 0)
    # --features: a source of embeddings by dataset index (utils.methods.features.FeatureSource, ``rows(indices)``)
    # that features() and labeled_features() read instead of the model's; None: the model's
    embeddings: object | None = None
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
        """Embeddings of the candidates, ``[N, D]``: the model's penultimate ones, or the feature source's."""
        if self.embeddings is not None:
            return self._cached("source", lambda: self.embeddings.rows(self.candidates))
        return self._probs_and_features()[1]

    def labeled_features(self) -> torch.Tensor:
        """Embeddings of the labeled set, ``[L, D]`` (as :meth:`features`)."""
        if len(self.labeled_idx) == 0:
            return self.features()[:0]
        if self.embeddings is not None:
            return self._cached("source_labeled", lambda: self.embeddings.rows(self.labeled_idx))
        return self._cached("labeled", lambda: self.predict(lambda out, _y: out.features.float(), self.labeled_idx))

    def mc_probs(self, consistent: bool = True) -> torch.Tensor:
        """``[K, N, C]`` softmax outputs of K MC-dropout passes over the candidates (dropout on,
        BatchNorm in eval mode): one mask per pass shared by all candidates (``consistent``, as
        BatchBALD needs) or an independent mask per candidate and pass (``consistent=False``, for
        BALD and the *Dropout scores); see utils.samplers.mc_dropout.mc_dropout_probs."""
        return self._cached("mc_consistent" if consistent else "mc", lambda: mc_dropout_probs(
            self.model, self.data, self.candidates, self.mc_samples, self.batch_size, self.dist, self.workers,
            seed=int(self.rng.integers(2**31)), consistent=consistent))


class Need(enum.Enum):
    """What a strategy needs from the script that runs it, besides the trained model and the pool.
    A script declares the needs it serves (``Protocol.SERVES``); one that does not serve a
    strategy's needs refuses the strategy before anything runs. The script reads them as build
    switches too: MC_DROPOUT builds the model with dropout, ENSEMBLE trains ``N_ENSEMBLES``
    members, PREVIOUS_MODEL keeps the last cycle's weights in the checkpoint."""

    MC_DROPOUT = "a model with dropout (MC dropout)"
    ENSEMBLE = "an ensemble of independently initialised models"  # extras["ensemble"]
    PREVIOUS_MODEL = "the previous cycle's model"  # extras["previous_model"]
    STATE = "a state kept across a trial's queries"  # extras["state"], a dict the checkpoint holds
    UNKNOWN_CLASS = "an open-set detector's unknown class"  # extras["unknown_class"]
    CCAL_FEATURES = "CCAL's encoder features"  # extras["features"], ["positions"], ["labels"], k, t, target

    def __str__(self) -> str:
        return self.value


class Params(Mapping):
    """A strategy's settings, read-only: ``params.outlier_fraction`` (the key's name without the
    strategy's prefix, lower-cased) or ``params["CORESET_OUTLIER_FRACTION"]`` (the key)."""

    def __init__(self, prefix: str, values: Mapping):
        object.__setattr__(self, "_values", dict(values))
        object.__setattr__(self, "_short", {key[len(prefix) + 1:].lower(): key for key in values})

    def __getattr__(self, name: str):
        try:
            return self._values[self._short[name]]
        except KeyError:
            raise AttributeError(f"no strategy setting {name!r}") from None

    def __setattr__(self, name, value):
        raise AttributeError("strategy settings are frozen; change them with --set KEY=VALUE")

    def __getitem__(self, key: str):
        return self._values[key]

    def __iter__(self):
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"Params({self._values})"


@dataclass(frozen=True)
class Strategy:
    """A registered strategy: its rule (``scores`` or ``positions``), names, ``needs``, declared
    settings (``params``: full key name -> Key; read as ``ctx.params``), and the training hook
    (``training``: a utils.samplers.hooks.TrainingHook class whose own settings are its ``PARAMS``)
    that protocols running hooks add to the round. ``pool_subset``: the query looks at a random
    subset of this many unlabeled samples; ``fixed_size=False``: a selector that may return fewer
    than query_size (CCAL's per-class quota); ``embeddings``: it selects on embeddings alone (a feature
    source applies); ``model_free``: it needs no trained model (a cold start's initial set)."""

    name: str
    scores: Callable | None = None  # ctx -> Tensor[len(candidates)]
    positions: Callable | None = None  # ctx -> positions into ctx.candidates
    aliases: tuple = ()
    needs: frozenset = frozenset()  # of Need
    prefix: str = ""
    params: Mapping = field(default_factory=lambda: MappingProxyType({}))  # KEY -> Key
    training: Callable | None = None
    pool_subset: int | None = None
    fixed_size: bool = True
    embeddings: bool = False  # selects on embeddings alone: a --features source replaces the model's features
    model_free: bool = False  # needs no trained model (ctx.model may be None): it can choose the initial set

    def keys(self, runs_hooks: bool = True) -> dict:
        """The settings keys of this strategy (and, where the script runs it, its training hook's)."""
        hook = dict(self.training.PARAMS) if runs_hooks and self.training is not None else {}
        return {**self.params, **hook}

    def params_from(self, settings: Mapping | None) -> Params:
        """This strategy's settings as resolved in ``settings`` (a script's Settings, or any mapping of keys;
        a key it lacks, or None, gives the key's default)."""
        return resolved_params(self.prefix, self.params, settings)

    def missing(self, serves) -> list:
        """The needs a script serving ``serves`` does not meet."""
        return sorted(str(n) for n in self.needs - frozenset(serves))

    def candidates(self, pool_idx: np.ndarray) -> np.ndarray:
        """The pool, or a random subset of ``pool_subset`` of it (sorted), drawn from numpy's global RNG."""
        pool_idx = np.asarray(pool_idx)
        if self.pool_subset and len(pool_idx) > self.pool_subset:
            return np.sort(pool_idx[np.random.permutation(len(pool_idx))[: self.pool_subset]])
        return pool_idx

    def select(self, ctx: QueryContext) -> np.ndarray:
        """``query_size`` distinct candidate indices (dataset indices; at most ``query_size`` for a
        selector without ``fixed_size``): a scorer's highest scores, a selector's positions; rank 0
        decides."""
        if ctx.query_size > len(ctx.candidates):
            raise UserError(f"query size {ctx.query_size} is larger than the {len(ctx.candidates)} "
                            "candidates left in the pool")
        if self.scores is not None:
            positions = top_k(self.scores(ctx), ctx.query_size)
        else:
            positions = self.positions(ctx)
        chosen = ctx.candidates[np.asarray(positions, dtype=np.int64)]
        if len(np.unique(chosen)) != len(chosen) or len(chosen) > ctx.query_size or (
                self.fixed_size and len(chosen) != ctx.query_size):
            raise RuntimeError(f"strategy {self.name} returned {len(np.unique(chosen))} distinct indices, "
                               f"expected {ctx.query_size}")
        return distributed.broadcast_indices(chosen, ctx.dist)


def linear_head(model: torch.nn.Module, features: torch.Tensor, probs: torch.Tensor,
                who: str = "this strategy") -> torch.nn.Linear:
    """The model's classifier on its penultimate ``features``: the nn.Linear (features -> classes) whose
    softmax reproduces ``probs`` (the model's own outputs for those features); none: one line naming
    ``who`` needs it (ALFAMix and DropQuery move or drop features and read the classes it gives)."""
    for module in reversed(list(model.modules())):
        if isinstance(module, torch.nn.Linear) and module.weight.shape == (probs.shape[1], features.shape[1]):
            with torch.no_grad():
                head_probs = torch.softmax(module(features.to(module.weight)).float(), 1)
            if torch.allclose(head_probs.cpu(), probs.cpu(), atol=1e-4):
                return module
    raise UserError(f"{who} needs a classifier whose logits are a linear layer of its features; this model has "
                    "none")


def top_k(scores: torch.Tensor, k: int, largest: bool = True) -> np.ndarray:
    """Positions of the ``k`` largest (smallest) scores; ties keep the lower position first."""
    scores = torch.as_tensor(scores)
    order = torch.argsort(scores, descending=largest, stable=True)
    return order[:k].numpy()


_REGISTRY = {}  # name -> Strategy
_NAMES = Registry("strategy")  # every name and alias, lower-cased -> name
_KEYS = {}  # settings key -> (the Key, the strategy or hook declaring it first)


def prefixed(prefix: str, params: Mapping | None) -> dict:
    """``{PARAM: Key}`` as ``{PREFIX_PARAM: Key}``."""
    return {f"{prefix}_{param.upper()}": key for param, key in (params or {}).items()}


def _declare_keys(owner: str, keys: Mapping) -> None:
    """Keys declared by several strategies (GCN_*, shared by UncertainGCN and CoreGCN) must be one Key."""
    for name, key in keys.items():
        if not isinstance(key, Key):
            raise TypeError(f"{owner}: setting {name} must be a utils.core.config.Key")
        if name in _KEYS and _KEYS[name][0] != key:
            raise ValueError(f"{owner} declares {name} differently from {_KEYS[name][1]}")
        _KEYS.setdefault(name, (key, owner))


def resolved_params(prefix: str, keys: Mapping, settings: Mapping | None) -> Params:
    """The values of ``keys`` in ``settings`` (a key it lacks, or None, gives the key's default)."""
    settings = settings or {}
    return Params(prefix, {key: settings[key] if key in settings else k.default for key, k in keys.items()})


def with_params(fn: Callable, prefix: str, keys: Mapping) -> Callable:
    """``fn(ctx)`` called with ``ctx.params`` holding its strategy's settings, read from ``ctx.settings``
    (a shallow copy of the context when they differ: what the context computed stays shared); ``fn`` itself
    when the strategy has no settings."""
    if not keys:
        return fn

    @functools.wraps(fn)
    def rule(ctx: QueryContext):
        params = resolved_params(prefix, keys, ctx.settings)
        return fn(ctx if ctx.params == params else dataclasses.replace(ctx, params=params))
    return rule


def _register(name: str, aliases: Iterable, needs: Iterable, prefix: str | None, params: Mapping | None,
              **rule) -> Strategy:
    prefix = (prefix or name).upper()
    keys = MappingProxyType(prefixed(prefix, params))
    rule = {kind: with_params(fn, prefix, keys) if callable(fn) and kind in ("scores", "positions") else fn
            for kind, fn in rule.items()}
    strategy = Strategy(name, aliases=tuple(aliases), needs=frozenset(needs), prefix=prefix, params=keys, **rule)
    if not all(isinstance(n, Need) for n in strategy.needs):
        raise TypeError(f"strategy {name}: needs are utils.samplers.registry.Need members")
    _declare_keys(name, strategy.params)
    if strategy.training is not None:
        _declare_keys(strategy.training.__name__, strategy.training.PARAMS)
    for key in (strategy.name, *strategy.aliases):
        _NAMES.add(key, strategy.name)
    _REGISTRY[strategy.name] = strategy
    return strategy


def register_scorer(name: str, aliases: tuple = (), needs: Iterable = (), params: Mapping | None = None,
                    prefix: str | None = None, training: Callable | None = None,
                    pool_subset: int | None = None, embeddings: bool = False,
                    model_free: bool = False) -> Callable:
    """Register ``fn(ctx) -> scores`` (higher = queried first) under ``name`` and ``aliases``, with
    its ``needs`` (:class:`Need`) and settings ``params`` ({PARAM: Key}, keys ``<prefix>_<PARAM>``;
    ``prefix`` defaults to the upper-cased name); ``embeddings`` and ``model_free``: see Strategy. Returns
    ``fn`` reading its settings from ``ctx.settings`` as ``ctx.params`` (see with_params)."""
    def decorate(fn):
        return _register(name, aliases, needs, prefix, params, scores=fn, training=training,
                         pool_subset=pool_subset, embeddings=embeddings, model_free=model_free).scores
    return decorate


def register_selector(name: str, aliases: tuple = (), needs: Iterable = (), params: Mapping | None = None,
                      prefix: str | None = None, training: Callable | None = None, pool_subset: int | None = None,
                      fixed_size: bool = True, embeddings: bool = False, model_free: bool = False) -> Callable:
    """Register ``fn(ctx) -> positions into ctx.candidates`` under ``name`` and ``aliases`` (see
    register_scorer for ``needs``, ``params`` and ``prefix``; Strategy for ``embeddings`` and ``model_free``)."""
    def decorate(fn):
        return _register(name, aliases, needs, prefix, params, positions=fn, training=training,
                         pool_subset=pool_subset, fixed_size=fixed_size, embeddings=embeddings,
                         model_free=model_free).positions
    return decorate


def get_strategy(name: str, serves: Iterable | None = None, where: str = "this script", hint: str = "",
                 runs_hooks: bool = True) -> Strategy:
    """The strategy registered as ``name`` (any case, or an alias). With ``serves`` (the needs a
    script meets), a strategy needing more stops with one line naming what is missing (``hint``
    appended), before anything runs; a script that does not run training hooks
    (``runs_hooks=False``) refuses the strategies that train networks of their own."""
    strategy = _REGISTRY[_NAMES.find(name, list_strategies())]
    if serves is not None:
        if strategy.training is not None and not runs_hooks:
            raise UserError(f"strategy {strategy.name} trains networks of its own with the classifier, which "
                            f"{where} does not run; use main_al.py")
        missing = strategy.missing(serves)
        if missing:
            raise UserError(f"strategy {strategy.name} needs {'; '.join(missing)}, which {where} does not provide"
                            + hint)
    return strategy


def list_strategies() -> list:
    return sorted(_REGISTRY)
