"""The 20-strategy toolkit's protocol (cure-lab deep-active-learning; spec 003, sections 1-4) for
main_al.py: percent budgets, one initial network per trial retrained (a copy) every round, SGD with
milestones and clamped gradients, per-dataset batches and normalisation (config/deepal.py); with
--ssl, semi-supervised training of the round's network over the labeled set and the unlabeled pool
(utils/methods/ssl.py), with any strategy."""

from __future__ import annotations

import argparse
import copy
import math

import numpy as np
import torch
from torch import nn

from config.deepal import BUDGET_QUERIES, MODELS, SERVES, TOOLKIT_SSL, budget_counts
from models import build_model
from utils.core import distributed
from utils.core.cli import add_inert_flags, add_refused_flags
from utils.core.data import cycled_batches, forever, make_batch_loader, make_loader
from utils.core.errors import UserError
from utils.core.splits import balanced_subset, random_subset
from utils.core.train import fit
from utils.methods.features import LinearProbe
from utils.methods.ssl import make_ssl
from utils.protocols.pool import PoolProtocol, Trial
from utils.samplers.registry import Need

_TOOLKIT_SSL = {name.lower(): pair for name, pair in TOOLKIT_SSL.items()}  # (names ignore case)


def deepal_budget(cfg, pool_size: int, start: int | None = None, num_classes: int | None = None,
                  cold: bool = False) -> tuple[int, int, int, int]:
    """(initial labels, labels per query, total labels, rounds) from the percent settings (or the
    counts ``start`` and QUERY_SIZE; ``cold``: own images with none labeled, the first query chosen
    by --init-strategy), or from BUDGET's regime for ``num_classes`` classes (config/deepal.py
    budget_counts)."""
    if getattr(cfg, "BUDGET", None) is not None:
        start, query, end = budget_counts(cfg.BUDGET, num_classes, pool_size)
        return start, query, end, BUDGET_QUERIES
    start = int(cfg.N_START * pool_size / 100) if start is None else start
    end = pool_size if cfg.N_END == -1 else int(cfg.N_END * pool_size / 100)
    query = end - start if cfg.N_QUERY == -1 else int(cfg.N_QUERY * pool_size / 100)
    query = cfg.QUERY_SIZE or query
    if start < 1 and not cold:
        raise UserError(f"--nStart {cfg.N_START} labels no sample of the {pool_size}-sample pool; raise --nStart")
    if end > pool_size or end < start:
        raise UserError(f"--nEnd {cfg.N_END} must lie between --nStart and 100 (or be -1)")
    if end > start and query < 1:
        raise UserError(f"--nQuery {cfg.N_QUERY} queries no sample of the {pool_size}-sample pool; raise --nQuery "
                        "or give --query-size N")
    rounds = math.ceil((end - start) / query) if end > start else 0
    return start, query, end, rounds


class EarlyStop:
    """The toolkit's early stop of an --ssl round (not MixMatch's): ``method.stop_early`` on the summed
    losses of consecutive epochs; called after every epoch with its summed loss."""

    def __init__(self, method):
        self.method, self.previous = method, None

    def __call__(self, summed_loss: float) -> bool:
        done, self.previous = self.method.stop_early(self.previous, summed_loss), summed_loss
        return done


class DeepAL(PoolProtocol):
    """``--protocol deepal``."""

    NAME = "deepal"
    INITIAL_SET_KEY = "N_START"
    STRATEGY_FLAG, CYCLES_KEY = "--strategy", "CYCLES"
    SERVES = SERVES
    LINEAR = True

    @staticmethod
    def add_run_args(parser) -> None:
        """The toolkit's flags that are not settings."""
        parser.add_argument("--data_path", dest="data_root", default=argparse.SUPPRESS,
                            help="the toolkit's name for --data-root (default: --data-root's)")
        parser.add_argument("--save_path", dest="out", default=argparse.SUPPRESS,
                            help="the toolkit's name for --out (default: --out's)")
        add_inert_flags(parser, {"--nEmb": "the toolkit defines it and never reads it",
                                 "--save_file": "the rounds' results go to <out>/cycles.csv (with a header)",
                                 "--proxy_model": "the toolkit's selection-via-proxy strategy is not exported there "
                                                  "either"})
        add_refused_flags(parser, {"--load_ckpt": "not supported: to continue a run, give its --out and --resume",
                                   "--add_imagenet": "not supported: the toolkit's MixMatch strategies add ImageNet "
                                                     "images to Tiny ImageNet's unlabeled stream with it; --ssl "
                                                     "mixmatch trains on the pool only"},
                          action="store_true")

    STRATEGY_NOTE = ("; and the toolkit's semi-supervised names, each an --ssl method with a strategy: "
                     + ", ".join(f"{n} (--ssl {m} + {s})" for n, (m, s) in TOOLKIT_SSL.items()))
    refuse = None
    ssl = "none"  # the round's semi-supervised method (strategy_name sets it)

    def strategy_name(self) -> str:
        """The query strategy (a toolkit SSL name stands for --ssl METHOD with its query strategy);
        sets ``ssl``."""
        cfg = self.cfg
        if not cfg.STRATEGY:
            raise UserError("--strategy is required (see the README's strategy table, e.g. --strategy EntropySampling)")
        self.ssl, name = cfg.SSL, cfg.STRATEGY
        if name.lower() in _TOOLKIT_SSL:
            method, name = _TOOLKIT_SSL[name.lower()]
            if cfg.SSL not in ("none", method):
                raise UserError(f"--strategy {cfg.STRATEGY} is the toolkit's --ssl {method} --strategy {name}; it "
                                f"contradicts --ssl {cfg.SSL}: give one of them")
            self.ssl = method
        return name

    def registry_name(self, name: str) -> str:
        """A toolkit SSL name stands for its query strategy."""
        return _TOOLKIT_SSL.get(name.lower(), (None, name))[1]

    def sweep_strategies(self, names: list) -> list:
        """As every protocol's, with the toolkit's SSL names kept as given (each its own run)."""
        if [n.lower() for n in names] == ["all"]:
            return super().sweep_strategies(names)
        return [n if n.lower() in _TOOLKIT_SSL else super(DeepAL, self).sweep_strategies([n])[0] for n in names]

    def load_data(self):
        cfg = self.cfg
        return self.load_images(mean=cfg.MEAN, std=cfg.STD, crop_padding=cfg.CROP_PADDING, flip=cfg.FLIP)

    def fit_inputs(self) -> None:
        """The toolkit's network for the data: LeNet needs images of at least LENET_MIN_SIZE; the
        MC-dropout strategies get dropout before a ResNet's classifier."""
        cfg, data = self.cfg, self.data
        self.model_name, options = MODELS[cfg.MODEL]
        if self.model_name == "lenet" and data.image_size < cfg.LENET_MIN_SIZE:
            data.resize_inputs(cfg.LENET_MIN_SIZE)
        if self.model_name == "lenet":
            options = {**options, "image_size": data.image_size}
        elif Need.MC_DROPOUT in self.strategy.needs:
            options = {**options, "dropout": cfg.MC_DROPOUT, "consistency_head": False}
        else:
            options = {**options, "consistency_head": False}
        self.model_options = options
        self.members = cfg.N_ENSEMBLES if Need.ENSEMBLE in self.strategy.needs else 1
        if self.ssl != "none" and self.strategy.training is not None:
            raise UserError(f"--ssl {self.ssl} trains the task model its own way; {self.strategy.name} trains "
                            "networks of its own alongside the supervised loop: use it without --ssl")
        make_ssl(cfg, self.ssl, data.num_classes, 1, self.dist.device)  # its settings are checked here
        if cfg.PRETRAINED:  # a wrong model or an unreadable file stops here, before anything is written
            self.imagenet_init(build_model(self.model_name, data.num_classes, data.in_channels, **options))

    def plan(self, pool_size: int) -> int:
        """The number of cycles (rounds + 1 trainings, or CYCLES); checks the budget."""
        own = self.data.own
        self.start, self.query, self.end, self.rounds = deepal_budget(
            self.cfg, pool_size, None if own is None else len(own.initial_idx), self.data.num_classes,
            cold=self.cold_start())
        cycles = self.rounds + 1 if self.cfg.CYCLES is None else self.cfg.CYCLES
        if cycles > self.rounds + 1:
            raise UserError(f"--cycles {cycles} needs more labels than --nEnd {self.cfg.N_END} allows "
                            f"({self.rounds + 1} rounds)")
        return cycles

    def derived(self) -> dict:
        return {"model_name": self.model_name, "model_options": self.model_options, "n_start": self.start,
                "n_query": self.query, "n_end": self.end, "rounds": self.rounds, "strategy_name": self.strategy.name,
                "members": self.members, "ssl": self.ssl}

    def names(self) -> tuple[tuple, str]:
        """(results-folder name parts, the run's label)."""
        ssl = () if self.ssl == "none" else (f"ssl-{self.ssl}",)
        model = "linear" if self.cfg.TRAIN_MODE == "linear" else self.cfg.MODEL
        parts = ("deepal", self.data.name, model, self.strategy.name, *ssl)
        return parts, " ".join(parts[1:])

    def start_trial(self, trial: int, labelable: np.ndarray) -> Trial:
        """f_0 (and the other ensemble members' own initial weights, after it), then L_0 at random
        (numpy's RNG, which the networks do not touch): f_0 and L_0 are the same for every strategy
        of a trial (a paired sweep). Own images: L_0 is PATH/labeled/; PRETRAINED: f_0's trunk;
        --init-strategy: L_0 chosen by that strategy on the feature source."""
        initial = [self.new_model().to(self.dist.device) for _ in range(self.members)]
        if self.data.own is not None:
            labeled = labelable
        elif self.init is not None:  # --init-strategy: chosen on the feature source
            labeled = self.initial_set(labelable, self.start, trial)
        elif self.cfg.BUDGET is not None:  # Lüth et al.'s regimes start class-balanced
            labeled = balanced_subset(self.data.train_targets, self.start, np.random.randint(2**31), labelable)
        else:
            labeled = random_subset(labelable, self.start)
        return Trial(labeled, initial_models=initial)

    def new_model(self) -> nn.Module:
        """A fresh network of the run (--train-mode linear: a linear classifier on the embeddings)."""
        if self.cfg.TRAIN_MODE == "linear":
            return LinearProbe(self.data.in_channels, self.data.num_classes)
        return self.imagenet_init(build_model(self.model_name, self.data.num_classes, self.data.in_channels,
                                              **self.model_options))

    def models(self, state: Trial, cycle: int) -> list:
        """Every round trains copies of the trial's initial networks."""
        return [copy.deepcopy(m) for m in state.initial_models]

    def optimizer(self, net) -> torch.optim.Optimizer:
        cfg = self.cfg
        optimizer_class = torch.optim.SGD if cfg.OPTIMIZER == "SGD" else torch.optim.Adam
        extra = {"momentum": cfg.MOMENTUM} if cfg.OPTIMIZER == "SGD" else {}
        return optimizer_class(net.parameters(), lr=cfg.LR, weight_decay=cfg.WEIGHT_DECAY, **extra)

    def epoch_lr(self, epoch: int) -> float:
        """LR x the product of GAMMAS of the SCHEDULE milestones reached (the toolkit sets it every epoch)."""
        cfg = self.cfg
        return cfg.LR * math.prod(g for m, g in zip(cfg.SCHEDULE, cfg.GAMMAS) if epoch >= m)

    def train(self, model, state: Trial, pool_idx: np.ndarray, hook, run, desc: str) -> None:
        """N_EPOCH epochs of cross-entropy on L, as the toolkit's Strategy.train; ``hook`` adds a
        strategy's own training (utils/samplers/hooks.py); --ssl: :meth:`train_semi_supervised`."""
        if self.ssl != "none":
            return self.train_semi_supervised(model, state, pool_idx, run, desc)
        cfg, data, dist = self.cfg, self.data, self.dist
        net = distributed.wrap(model, dist)
        optimizer = self.optimizer(net)
        indices = hook.train_indices(state.labeled_idx) if hook else state.labeled_idx
        loader = make_loader(data.train, indices, cfg.BATCH_SIZE, True, np.random.randint(2**31), dist,
                             self.data.workers)

        def start_epoch(epoch):
            net.train()
            lr = self.epoch_lr(epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            if hook:
                hook.set_lr(lr)

        def step(batch):
            x, y = data.train_transform(batch.images.to(dist.device)), batch.targets.to(dist.device)
            out = net(x)
            loss = nn.functional.cross_entropy(out.logits, y)
            if hook:
                loss = loss + hook.extra_loss(net, out, x, y, batch.epoch)
                hook.zero_grad()
            optimizer.zero_grad(set_to_none=True)
            dist.precision.minimize(loss, optimizer, clip_value=cfg.GRAD_CLIP,
                                    before_update=(lambda: hook.step(out, batch.epoch)) if hook else None)
            return loss.detach()

        fit(loader, cfg.N_EPOCH, step, run, desc, start_epoch, optimizer=optimizer)

    def train_semi_supervised(self, model, state: Trial, pool_idx: np.ndarray, run, desc: str) -> None:
        """Up to N_EPOCH epochs of the --ssl method (utils/methods/ssl.py) with the supervised run's
        optimizer and schedule: each step a labeled batch (the method's size, drawn from reshuffled
        passes over L) and an unlabeled batch of the pool U (mu times as large, reshuffled passes), as
        many steps per epoch as the method takes (the toolkit's: ceil(|L| / B), MixMatch int(N / B));
        gradients clamped as the supervised run's (not MixMatch's: the toolkit clamps after its step).
        Ends with the network the method tests and queries with (MixMatch: its EMA) in ``model``."""
        cfg, data, dist = self.cfg, self.data, self.dist
        method = make_ssl(cfg, self.ssl, data.num_classes, len(pool_idx), dist.device)
        net = distributed.wrap(model, dist)
        optimizer = self.optimizer(net)
        labeled_idx, batch = state.labeled_idx, method.batch_size
        steps = method.steps_per_epoch(len(labeled_idx), len(labeled_idx) + len(pool_idx))
        seed = np.random.randint(2**31)

        def labeled_batches(epoch):  # `steps` full batches from reshuffled passes over L
            return cycled_batches(np.random.default_rng([seed, epoch]), labeled_idx, steps, batch).tolist()

        loader = make_batch_loader(data.train, labeled_batches, dist, self.data.workers)
        unlabeled = forever(make_loader(data.train, pool_idx, method.unlabeled_batch_size, True,
                                        np.random.randint(2**31), dist, self.data.workers))
        position_of = torch.full((len(data.train),), -1, dtype=torch.long)
        position_of[torch.as_tensor(pool_idx)] = torch.arange(len(pool_idx))
        weak = data.train_transform
        strong = (lambda u: weak(method.strong_augment(u))) if method.strong_augment is not None else None
        clip = cfg.GRAD_CLIP if method.clamp_gradients else None
        logged = {}  # the epoch's sums of the method's logs

        def start_epoch(epoch):
            net.train()
            for group in optimizer.param_groups:
                group["lr"] = self.epoch_lr(epoch)

        def step(batch):
            u_images, _, u_idx = next(unlabeled)
            loss, logs = method.loss(lambda x: net(x).logits, weak(batch.images.to(dist.device)),
                                     batch.targets.to(dist.device), u_images.to(dist.device),
                                     position_of[u_idx].to(dist.device), weak, strong, batch.position / cfg.N_EPOCH)
            for key, value in (*logs.items(), ("steps", 1)):
                logged[key] = logged.get(key, 0.0) + value
            optimizer.zero_grad(set_to_none=True)
            dist.precision.minimize(loss, optimizer, clip_value=clip)
            method.after_step(model, lr=optimizer.param_groups[0]["lr"])
            return logs["loss"]  # (the logs' one host sync holds it)

        def end_epoch(epoch):  # the epoch's mean of every log (mask rate, unlabeled loss, ...) to tensorboard
            steps_done = logged.pop("steps", 0)
            for key, total in logged.items():
                run.scalar(f"{desc}/ssl_{key}", total / max(steps_done, 1), epoch)
            logged.clear()

        method.start(model)
        fit(loader, cfg.N_EPOCH, step, run, desc, start_epoch, end_epoch, optimizer=optimizer,
            stop=EarlyStop(method))
        tested = method.eval_model(model)
        if tested is not model:
            model.load_state_dict(tested.state_dict())

    @property
    def grad_clip(self) -> float | None:
        return self.cfg.GRAD_CLIP

    def query_size(self, cycle: int, state: Trial) -> int:
        """nQuery% of the pool per round; the last round takes what is left; none after it."""
        if cycle >= self.rounds:
            return 0
        return min(self.query, self.end - len(state.labeled_idx) - len(state.discarded))

    def query_extras(self, models: list) -> dict:
        return {"ensemble": models}
