"""What main_al.py's one trial/cycle loop asks of a protocol (:class:`PoolProtocol`, an abstract
base class whose methods are listed in the loop's order), and the state of a trial.

A protocol (utils/protocols/deepal.py, rethinking.py) is built from the frozen settings and the
run-control args and answers, in the loop's order: which strategy; the data; the budget; a trial's
initial state; the networks of a cycle; one cycle's training; the query size; the extras its
strategies get; what happens after a query. Everything a trial carries from cycle to cycle lives in
a :class:`Trial`, which is also what its checkpoint holds.
"""

from __future__ import annotations

import abc
import argparse
import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from models.resnet import WHOLE_TRUNK
from utils.core.data import augmented_batches, load_data
from utils.core.errors import UserError
from utils.methods import features
from utils.samplers import get_strategy, list_strategies
from utils.samplers.hooks import HookSettings
from utils.samplers.registry import Need

EMPTY = np.empty(0, dtype=np.int64)


@dataclass
class Trial:
    """One trial's state: the labeled set, the queried images of unknown classes (open set: they
    left the pool), what a strategy keeps across queries (ClusterMargin's clusters), the previous
    cycle's trained weights (TOD's previous model, --finetuning), CEAL's confident pool images
    with their predicted labels for the next cycle, (deepal) the trial's initial networks, and the
    queried images still waiting for a person's labels."""

    labeled_idx: np.ndarray
    discarded: np.ndarray = field(default_factory=lambda: EMPTY)
    strategy_state: dict = field(default_factory=dict)
    previous: dict | None = None
    pseudo_idx: np.ndarray = field(default_factory=lambda: EMPTY)
    pseudo_labels: np.ndarray = field(default_factory=lambda: EMPTY)
    initial_models: list = field(default_factory=list)
    waiting: np.ndarray = field(default_factory=lambda: EMPTY)  # queried, labels not given yet (a person)

    def checkpoint(self, keep_previous: bool) -> dict:
        """What the trial needs to continue (run.commit adds the labeled set and the RNG states)."""
        saved = {"strategy_state": self.strategy_state, "discarded": torch.as_tensor(self.discarded),
                 "pseudo_idx": torch.as_tensor(self.pseudo_idx), "pseudo_labels": torch.as_tensor(self.pseudo_labels),
                 "waiting": torch.as_tensor(self.waiting)}
        if keep_previous and self.previous is not None:
            saved["previous_model"] = self.previous
        return saved

    def previous_model(self, like: torch.nn.Module) -> torch.nn.Module:
        """A copy of ``like`` holding the previous cycle's weights."""
        previous = copy.deepcopy(like)
        previous.load_state_dict(self.previous)
        return previous

    def take_answers(self, oracle, folder: str, cycle: int) -> None:
        """A person's answers to the last query (cycle ``cycle - 1``): the known images join the
        labeled set, the others are set aside (open set); nothing waits any more."""
        if len(self.waiting):
            known, unknown = oracle.collect(folder, cycle - 1, self.waiting)
            self.labeled_idx = np.concatenate([self.labeled_idx, known])
            self.discarded, self.waiting = np.concatenate([self.discarded, unknown]), self.waiting[:0]

    def record(self, answer) -> None:
        """The oracle's answer to this cycle's query: the unknown images leave the pool; images a
        person has not answered yet wait (the known ones join L at commit)."""
        self.discarded, self.waiting = np.concatenate([self.discarded, answer.unknown]), answer.waiting

    def restore(self, saved: dict) -> None:
        """Continue from a checkpoint written by :meth:`checkpoint` (and run.commit)."""
        self.labeled_idx = saved["labeled_idx"].numpy()
        self.discarded = saved["discarded"].numpy()
        self.strategy_state = saved["strategy_state"]
        self.previous = saved.get("previous_model")
        self.pseudo_idx, self.pseudo_labels = saved["pseudo_idx"].numpy(), saved["pseudo_labels"].numpy()
        self.waiting = saved["waiting"].numpy() if "waiting" in saved else EMPTY


class PoolProtocol(abc.ABC):
    """The contract of a main_al.py protocol, in the order the loop calls it (the abstract methods are
    what each protocol must give; the others have a default). Built from the settings and the
    run-control args; ``bind`` adds the data, the processes and the strategy."""

    NAME: str  # --protocol NAME
    STRATEGY_FLAG: str  # the flag naming the query strategy (its key is the tree's strategy_key)
    CYCLES_KEY: str  # the key of the number of cycles
    INITIAL_SET_KEY: str  # the key of the protocol's initial labeled set, which own images replace
    SERVES: frozenset = frozenset()  # the needs (Need) the protocol meets for its strategies
    LINEAR = False  # whether it trains a linear classifier on the feature source (--train-mode linear)
    STRATEGY_NOTE = ""  # what --help adds to the list of strategies

    def __init__(self, cfg, args):
        self.cfg, self.args = cfg, args
        self.data = self.dist = self.strategy = None
        self.features = self.init = None  # the feature source (--features) and initial-set strategy (--init-strategy)

    # ------------------------------------------------------------------ the command line
    @staticmethod
    @abc.abstractmethod
    def add_run_args(parser: argparse.ArgumentParser) -> None:
        """The protocol's flags that are not settings (and the seed's inert and refused ones)."""

    refuse: staticmethod | None = None  # refuse(flag, value): whether a refused flag's value is an error

    @classmethod
    def supported_strategies(cls) -> list:
        """The registry names of every strategy this protocol can run."""
        return [s for s in list_strategies() if not get_strategy(s).missing(cls.SERVES)]

    # ------------------------------------------------------------------ before the data
    def check_oracle(self) -> None:
        """What a run with a person answering (--oracle human/folder) refuses, before data is read."""
        cfg = self.cfg
        if cfg.ORACLE == "simulated":
            return
        refused = {"TRIALS": (cfg.TRIALS != 1, "one person labels one run: --trials 1"),
                   "KNOWN_CLASSES": (cfg.KNOWN_CLASSES, "images of none of the classes are answered 'unknown'"),
                   "MAX_TRAIN_SAMPLES": (cfg.MAX_TRAIN_SAMPLES, "the pool is PATH/unlabeled/"),
                   self.INITIAL_SET_KEY: (cfg.sources[self.INITIAL_SET_KEY] != "default",
                                          "the initial labeled set is PATH/labeled/")}
        for key, (given, why) in refused.items():
            if given:
                raise UserError(f"--oracle {cfg.ORACLE}: {why}; drop {key} ({cfg.sources[key]})")

    def side_task(self) -> bool:
        """Run a task instead of active learning (e.g. --make-splits); True if one ran."""
        return False

    @abc.abstractmethod
    def strategy_name(self) -> str:
        """The registry name of the run's query strategy (one line when none is given)."""

    def sweep_strategies(self, names: list) -> list:
        """The registry names of a sweep's strategies (``all``: every strategy this protocol can
        run), each checked as a single run would check it."""
        if [n.lower() for n in names] == ["all"]:
            return self.supported_strategies()
        return [get_strategy(self.registry_name(n), self.SERVES, f"the {self.NAME} protocol").name for n in names]

    def registry_name(self, name: str) -> str:
        """A strategy as the protocol's flag names it, as the registry names it."""
        return name

    # ------------------------------------------------------------------ the data and the budget
    @abc.abstractmethod
    def load_data(self):
        """The run's dataset with the protocol's normalisation and augmentation (see load_images)."""

    def load_images(self, **options):
        """The run's dataset (utils/core/data/datasets.py's load_data); with a person answering, the own-images
        layout, read from the run's image list when resumed."""
        own = self.cfg.ORACLE != "simulated"
        manifest = self.args.out if own and self.args.resume else None
        return load_data(self.cfg, self.args, own_images=own, manifest_out=manifest, **options)

    def bind(self, data, dist, strategy, labelable: np.ndarray | None = None) -> None:
        """The run's data, processes and strategy; ``labelable``: the images an initial labeled set
        may hold (the oracle's; default every training image)."""
        self.data, self.dist, self.strategy = data, dist, strategy
        self.labelable = data.train_idx if labelable is None else labelable

    @abc.abstractmethod
    def fit_inputs(self) -> None:
        """The network for the data and the strategy; reads and checks every input file before anything
        is written."""

    def use_features(self, source) -> None:
        """The run's feature source (utils/methods/features.py; None: the model's features) and the strategy
        choosing the initial set; with --train-mode linear the data become the source's embeddings."""
        self.features, self.init = source, features.init_strategy(self.cfg)
        if self.cfg.TRAIN_MODE == "linear":
            if not self.LINEAR:
                raise UserError(f"--train-mode linear: --protocol {self.NAME} trains its own network; use --protocol "
                                "deepal")
            features.check_linear(self.strategy, getattr(self, "ssl", "none"))
            self.data = features.embedding_data(self.data, source).to(self.dist.device)
        self.cold_start()  # (an empty labeled/ without --init-strategy stops here)

    def cold_start(self) -> bool:
        """Own images with an empty labeled/: the first query is the --init-strategy's, before any training
        (refused without one)."""
        own = self.data.own
        if own is None or len(own.initial_idx):
            return False
        if self.init is None:
            raise UserError(f"{own.root}/labeled/ holds no image: give --init-strategy (e.g. KCenterGreedy with "
                            "--features simclr) to choose the first images to label, or label a few per class")
        return True

    def initial_set(self, labelable: np.ndarray, size: int, trial: int) -> np.ndarray:
        """L_0 of ``size`` images chosen by the --init-strategy on the feature source."""
        return features.initial_set(self.init, self.features, self.data, labelable, size, self.dist,
                                    self.cfg.SEED + trial, self.cfg)

    @abc.abstractmethod
    def plan(self, pool_size: int) -> int:
        """The number of cycles; checks that the budget fits in the pool."""

    @abc.abstractmethod
    def names(self) -> tuple[tuple, str]:
        """(results-folder name parts, the run's label)."""

    @abc.abstractmethod
    def derived(self) -> dict:
        """What the settings and the data determine, for config.json (``derived``)."""

    def pretrain(self, run) -> None:  # noqa: B027 (an optional step)
        """Whatever runs once before the trials (nothing by default)."""

    # ------------------------------------------------------------------ a trial, a cycle
    @abc.abstractmethod
    def start_trial(self, trial: int, labelable: np.ndarray) -> Trial:
        """The trial's initial state: L_0 (and whatever the protocol keeps per trial)."""

    @abc.abstractmethod
    def models(self, state: Trial, cycle: int) -> list:
        """The networks the cycle trains (the first is tested and queried with; more: an ensemble)."""

    def stream(self, indices: np.ndarray):
        """Endless augmented batches of ``indices`` for a strategy's own networks."""
        return augmented_batches(self.data, indices, self.batch_size, self.dist, self.data.workers)

    @property
    def batch_size(self) -> int:
        return self.cfg.BATCH_SIZE

    @property
    def grad_clip(self) -> float | None:
        """Gradient clipping of the task model (None: off), followed by the strategies' own networks."""
        return None

    def hook_settings(self) -> HookSettings:
        """What the strategy's training hook needs: the task optimiser's settings, the input geometry,
        --amp, and the values of the hook's own keys."""
        cfg, hook = self.cfg, self.strategy.training
        return HookSettings(lr=cfg.LR, momentum=cfg.MOMENTUM, weight_decay=cfg.WEIGHT_DECAY, grad_clip=self.grad_clip,
                            in_channels=self.data.in_channels, image_size=self.data.image_size,
                            device=self.dist.device, precision=self.dist.precision,
                            params={key: cfg[key] for key in (hook.PARAMS if hook else ())})

    @abc.abstractmethod
    def train(self, model, state: Trial, pool_idx: np.ndarray, hook, run, desc: str) -> None:
        """One cycle's training of ``model`` (``hook``: the strategy's training, or None)."""

    @abc.abstractmethod
    def query_size(self, cycle: int, state: Trial) -> int:
        """Images to query after cycle ``cycle`` (0: none)."""

    def query_extras(self, models: list) -> dict:
        """What the protocol gives its strategies beyond the trial's state (e.g. the ensemble)."""
        return {}

    def after_query(self, run, trial: int, cycle: int, model, state: Trial, pool_idx: np.ndarray,  # noqa: B027
                    queried: np.ndarray) -> None:
        """Whatever follows a query before the cycle commits (nothing by default)."""

    def keeps_previous(self) -> bool:
        """Whether checkpoints keep the previous cycle's weights."""
        return Need.PREVIOUS_MODEL in self.strategy.needs

    # ------------------------------------------------------------------ shared helpers
    def imagenet_init(self, model):
        """``model`` with its whole trunk from the PRETRAINED ImageNet weights (when set)."""
        if self.cfg.PRETRAINED:
            if not hasattr(model, "load_imagenet_trunk"):
                raise UserError("--pretrained loads ImageNet weights into the ImageNet ResNet-18 only: choose it "
                                "(deepal --model ImageNetResNet18, rethinking --arch imagenet_resnet18)")
            model.load_imagenet_trunk(self.cfg.PRETRAINED, WHOLE_TRUNK)
        return model
