"""What main_al.py's one trial/cycle loop asks of a protocol, and the state of a trial.

A protocol (utils/protocols/deepal.py, rethinking.py) is built from the frozen settings and the
run-control args and answers, in the loop's order: which strategy; the data; the budget; a trial's
initial state; the networks of a cycle; one cycle's training; the query size; the extras its
strategies get; what happens after a query. Everything a trial carries from cycle to cycle lives in
a :class:`Trial`, which is also what its checkpoint holds.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np
import torch

from models.resnet import WHOLE_TRUNK
from utils.core.cli import UserError
from utils.core.data import augmented_batches, load_data
from utils.samplers import get_strategy, list_strategies
from utils.samplers.hooks import HookSettings

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

    def restore(self, saved: dict) -> None:
        """Continue from a checkpoint written by :meth:`checkpoint` (and run.commit)."""
        self.labeled_idx = saved["labeled_idx"].numpy()
        self.discarded = saved["discarded"].numpy()
        self.strategy_state = saved["strategy_state"]
        self.previous = saved.get("previous_model")
        self.pseudo_idx, self.pseudo_labels = saved["pseudo_idx"].numpy(), saved["pseudo_labels"].numpy()
        self.waiting = saved["waiting"].numpy() if "waiting" in saved else EMPTY


class PoolProtocol:
    """The pieces both protocols share: settings, args, and once bound, the data, the device and
    the strategy; the batch stream and settings of strategy training hooks."""

    PROVIDES: frozenset = frozenset()  # the QueryContext extras the protocol gives every strategy
    STRATEGY_NOTE = ""  # what --help adds to the list of strategies

    def __init__(self, cfg, args):
        self.cfg, self.args = cfg, args
        self.data = self.dist = self.strategy = None

    INITIAL_SET_KEY = ""  # the key of the protocol's initial labeled set, which own images replace

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

    def load_images(self, **options):
        """The run's dataset (utils/core/data.py's load_data); with a person answering, the own-images
        layout, read from the run's image list when resumed."""
        own = self.cfg.ORACLE != "simulated"
        manifest = self.args.out if own and self.args.resume else None
        return load_data(self.cfg, self.args, own_images=own, manifest_out=manifest, **options)

    def imagenet_init(self, model):
        """``model`` with its whole trunk from the PRETRAINED ImageNet weights (when set)."""
        if self.cfg.PRETRAINED:
            if not hasattr(model, "load_imagenet_trunk"):
                raise UserError("--pretrained loads ImageNet weights into the ImageNet ResNet-18 only: choose it "
                                "(deepal --model ImageNetResNet18, rethinking --arch imagenet_resnet18)")
            model.load_imagenet_trunk(self.cfg.PRETRAINED, WHOLE_TRUNK)
        return model

    def bind(self, data, dist, strategy, labelable: np.ndarray | None = None) -> None:
        """The run's data, processes and strategy; ``labelable``: the images an initial labeled set
        may hold (the oracle's; default every training image)."""
        self.data, self.dist, self.strategy = data, dist, strategy
        self.labelable = data.train_idx if labelable is None else labelable

    @property
    def batch_size(self) -> int:
        return self.cfg.BATCH_SIZE

    def stream(self, indices: np.ndarray):
        """Endless augmented batches of ``indices`` for a strategy's own networks."""
        return augmented_batches(self.data, indices, self.batch_size, self.dist, self.args.workers)

    def hook_settings(self, grad_clip: float | None) -> HookSettings:
        cfg = self.cfg
        return HookSettings(lr=cfg.LR, momentum=cfg.MOMENTUM, weight_decay=cfg.WEIGHT_DECAY, grad_clip=grad_clip,
                            in_channels=self.data.in_channels, image_size=self.data.image_size,
                            device=self.dist.device, precision=self.dist.precision,
                            params={"LL_DETACH_EPOCH": cfg.LL_DETACH_EPOCH, "VAE_WIDTH": cfg.VAE_WIDTH})

    @classmethod
    def supported_strategies(cls) -> list:
        """The registry names of every strategy this protocol can run."""
        return [s for s in list_strategies() if not get_strategy(s).missing(cls.PROVIDES)]

    def sweep_strategies(self, names: list) -> list:
        """The registry names of a sweep's strategies (``all``: every strategy this protocol can
        run), each checked as a single run would check it."""
        if [n.lower() for n in names] == ["all"]:
            return self.supported_strategies()
        return [get_strategy(self.registry_name(n), self.PROVIDES, f"the {self.NAME} protocol").name for n in names]

    def registry_name(self, name: str) -> str:
        """A strategy as the protocol's flag names it, as the registry names it."""
        return name

    def side_task(self) -> bool:
        """Run a task instead of active learning (e.g. --make-splits); True if one ran."""
        return False

    def pretrain(self, run) -> None:
        """Whatever runs once before the trials (nothing by default)."""

    def keeps_previous(self) -> bool:
        """Whether checkpoints keep the previous cycle's weights."""
        return "previous_model" in self.strategy.needs

    def query_extras(self, models: list) -> dict:
        """Protocol-specific QueryContext extras."""
        return {}

    def after_query(self, run, trial: int, cycle: int, model, state: Trial, pool_idx: np.ndarray,
                    queried: np.ndarray) -> None:
        """Whatever follows a query before the cycle commits (nothing by default)."""
