"""What LfOSA's two entry scripts share (Ning et al., CVPR'22; spec 004 B).

``AL_center.py`` runs the baselines (one K-way classifier, trained and used for querying);
``AL_center_temperature.py`` runs LfOSA (detector A with K+1 outputs, classifier B with K).
Both parse the seed's flags (B.1) plus the common ones and work through an :class:`Experiment`:

* data (B.2): known classes 0..K-1 (or a seeded random choice), mapped to labels 0..K-1 with every
  unknown class mapped to K; init-percent of the known images labeled; the test set holds the
  known classes only; CIFAR normalisation, crop, flip and a random rotation of 15 degrees;
* networks (B.3): 2-d-bottleneck ResNets, built from scratch every cycle;
* training (B.4): the cycle's networks epoch by epoch in turn, SGD + StepLR each, optional
  center loss shared by all of them;
* the query (B.5) and its bookkeeping: queried knowns join L, queried unknowns join the
  detector's set I (label K); both leave the pool U for good; precision and recall per query.
"""

import argparse
import dataclasses
import math
import os
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from config import lfosa as defaults
from models.lfosa import BottleneckResNet
from utils.core import distributed
from utils.core.cli import ArgumentParser, UserError, add_common_args, parse_overrides, str2bool
from utils.core.data import load_data, make_loader
from utils.core.loop import start_run
from utils.core.openset import choose_known_classes, init_percent_pool, known_class_view, split_query
from utils.core.results import CYCLE_COLUMNS, OPENSET_COLUMNS
from utils.core.train import evaluate, seed_everything
from utils.methods.center_loss import CenterLossTerm
from utils.samplers import QueryContext, get_strategy

TEMPERATURE_SCRIPT = "AL_center_temperature.py"


# ----------------------------------------------------------------------------- command line

def parse_args(argv, script):
    """The seed's flags of ``script`` (B.1) and the common flags."""
    temperature = script == TEMPERATURE_SCRIPT
    flags = defaults.FLAGS
    parser = ArgumentParser(description=f"{script}: active learning for open-set annotation (Ning et al., CVPR'22)")
    group = parser.add_argument_group(f"{script} (the seed's flags)")
    add = group.add_argument
    add("-d", dest="dataset", help=argparse.SUPPRESS)  # the seed's -d/--dataset; --dataset is a common flag
    add("-j", dest="workers", type=int, default=0, help=argparse.SUPPRESS)  # the seed's -j/--workers
    add("--batch-size", type=int, default=flags["batch_size"], help="train, scoring and test batch (per process)")
    add("--lr-model", type=float, default=flags["lr_model"], help="SGD learning rate of the networks")
    add("--lr-cent", type=float, default=flags["lr_cent"], help="SGD learning rate of the centers")
    add("--weight-cent", type=float, default=flags["weight_cent"], help="center-loss weight (0: off)")
    add("--max-epoch", type=int, default=None, help=f"epochs per cycle (default {flags['max_epoch']}; or --epochs)")
    add("--max-query", type=int, default=None, help=f"AL cycles (default {flags['max_query']}; or --cycles)")
    add("--query-batch", type=int, default=flags["query_batch"], help="samples queried per cycle")
    add("--query-strategy", default=defaults.DEFAULT_STRATEGY[script],
        help="random, uncertainty, AV_based, AV_uncertainty, Max_AV, KMeans, BALD"
             + (", AV_temperature (LfOSA)" if temperature else "") + " or any registered strategy")
    add("--stepsize", type=int, default=flags["stepsize"], help="StepLR step (epochs)")
    add("--gamma", type=float, default=flags["gamma"], help="StepLR factor")
    add("--model", default=flags["model"], help=f"one of {', '.join(defaults.MODELS)} (2-d bottleneck)")
    add("--eval-freq", type=int, default=flags["eval_freq"], help="log test accuracy every N epochs")
    add("--print-freq", default=None, help=argparse.SUPPRESS)  # batch-loss prints: progress bars here
    add("--gpu", default=None, help="CUDA device index (ignored, with a notice, without CUDA)")
    add("--use-cpu", action="store_true", help="run on the CPU")
    add("--save-dir", default=flags["save_dir"], help="results go to <save-dir>/<run name> (--out overrides)")
    add("--plot", action="store_true", help=argparse.SUPPRESS)
    add("--is-filter", type=str2bool, default=True, help=argparse.SUPPRESS)
    add("--is-mini", type=str2bool, default=True, help=argparse.SUPPRESS)
    add("--known-class", type=int, default=flags["known_class"], help="K: classes 0..K-1 are known")
    add("--known-classes-random", action="store_true", help="a seeded random choice of the K known classes")
    add("--init-percent", type=int, default=flags["init_percent"], help="%% of the known images labeled at start")
    if temperature:
        add("--known-T", type=float, default=defaults.TEMPERATURE_FLAGS["known_T"],
            help="detector: CE temperature of known samples")
        add("--unknown-T", type=float, default=defaults.TEMPERATURE_FLAGS["unknown_T"],
            help="detector: CE temperature of queried unknown samples")
        add("--modelB-T", type=float, default=defaults.TEMPERATURE_FLAGS["modelB_T"],
            help="unused, as in the seed (it only names the run)")
    add_common_args(parser)
    parser.set_defaults(seed=flags["seed"], dataset=defaults.DEFAULT_DATASET[script])
    return parser.parse_args(argv)


def _first(*values):
    return next(v for v in values if v is not None)


def _check(args, temperature):
    """Bad values stop before anything is read or written."""
    if args.plot:
        raise UserError("--plot (the seed's per-epoch 2-d feature scatter) is not supported; plot results with plot.py")
    if not (args.is_filter and args.is_mini):
        raise UserError("--is-filter/--is-mini False are not supported: the open-set split is always used")
    if args.model.lower() not in defaults.MODELS:
        raise UserError(f"unknown --model {args.model!r}; choose from {', '.join(defaults.MODELS)}")
    names = {"max_epoch": "--max-epoch/--epochs", "cycles": "--max-query/--cycles"}
    for flag in ("batch_size", "query_batch", "stepsize", "eval_freq", "max_epoch", "cycles", "trials"):
        if getattr(args, flag) < 1:
            name = names.get(flag, "--" + flag.replace("_", "-"))
            raise UserError(f"{name} must be a positive integer, got {getattr(args, flag)}")
    if not 0 < args.init_percent <= 100:
        raise UserError(f"--init-percent must be in (0, 100], got {args.init_percent}")
    if args.weight_cent < 0 or args.lr_cent < 0 or args.lr_model <= 0:
        raise UserError("--weight-cent and --lr-cent must be >= 0 and --lr-model > 0")
    if temperature and min(args.known_T, args.unknown_T) <= 0:
        raise UserError("--known-T and --unknown-T must be positive")


def _settings(overrides):
    """config/lfosa.py's SETTINGS with ``--set KEY=VALUE`` applied."""
    cfg = dict(defaults.SETTINGS)
    for key, value in parse_overrides(overrides).items():
        if key not in cfg:
            raise UserError(f"--set {key}: no such setting; settings: {', '.join(sorted(cfg))}")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (isinstance(cfg[key], int)
                                                                              and not isinstance(value, int)):
            raise UserError(f"--set {key} expects a number ({type(cfg[key]).__name__}), got {value!r}")
        cfg[key] = value
    return cfg


def _strategy(args, script, provides):
    name = defaults.SEED_STRATEGIES.get(args.query_strategy.lower(), args.query_strategy)
    if name.lower() == "av_based2":
        raise UserError("AV_based2 (the seed's default) ranks every sample alike (spec B.5); use AV_based")
    strategy = get_strategy(name)
    missing = sorted(set(strategy.needs) - provides)
    if missing:
        hint = f"; run it with {TEMPERATURE_SCRIPT}" if "unknown_class" in missing else ""
        raise UserError(f"strategy {strategy.name} needs {', '.join(missing)}, which {script} does not provide{hint}")
    return strategy


def _device(args):
    """``distributed.setup`` with the seed's --use-cpu and --gpu: the CUDA device --gpu names when
    CUDA exists (one process; under a launcher each rank takes its local rank's device)."""
    if args.use_cpu:
        args.device = "cpu"
    notice, gpu = None, None
    if args.gpu is not None:
        if args.device == "cpu" or not torch.cuda.is_available():
            notice = f"--gpu {args.gpu} ignored: no CUDA device in use, running on the CPU"
        elif int(os.environ.get("WORLD_SIZE", "1")) > 1:
            notice = f"--gpu {args.gpu} ignored under a launcher: every rank uses its local rank's GPU"
        else:
            try:
                gpu = int(str(args.gpu).split(",")[0])
            except ValueError:
                raise UserError(f"--gpu expects a device index such as 0, got {args.gpu!r}") from None
            if not 0 <= gpu < torch.cuda.device_count():
                raise UserError(f"--gpu {gpu}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    args.gpu, args.use_cpu = None, False  # folded into --device: like it, they may change on resume
    dist = distributed.setup(args.device, args.local_rank if gpu is None else gpu)
    if notice and dist.is_main:
        print(f"notice: {notice}", flush=True)
    return dist


# ----------------------------------------------------------------------------- data

class RandomRotation(nn.Module):
    """``base`` (crop, flip, normalise), then a rotation of every image by its own uniform angle in
    [-degrees, degrees], nearest neighbour, the corners black: torchvision's RandomRotation on the
    PIL image (B.2), done after normalisation on whole batches."""

    def __init__(self, base, degrees):
        super().__init__()
        self.base, self.degrees = base, degrees

    def forward(self, images):
        x = self.base(images)
        black = -self.base.mean / self.base.std  # what 0 becomes after normalisation
        angle = ((torch.rand(len(x)) * 2 - 1) * math.radians(self.degrees)).to(x.device)
        cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
        theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
        grid = nn.functional.affine_grid(theta, list(x.shape), align_corners=False)
        return nn.functional.grid_sample(x - black, grid, mode="nearest", align_corners=False) + black


@dataclasses.dataclass
class LabelSets:
    """One trial's sets: L (``labeled``, known), I (``invalid``: queried unknowns, the detector's
    class K) and a strategy's ``state``; the pool U is everything else."""

    labeled: np.ndarray
    invalid: np.ndarray
    state: dict

    def pool(self, train_idx):
        return np.setdiff1d(train_idx, np.union1d(self.labeled, self.invalid))


@dataclasses.dataclass
class Member:
    """One network of a cycle: ``model`` trained on ``indices`` with ``loss(logits, targets)``."""

    name: str
    model: nn.Module
    indices: np.ndarray
    loss: Callable


def cross_entropy(logits, targets):
    return nn.functional.cross_entropy(logits, targets)


def temperature_cross_entropy(known_t, unknown_t, unknown_class):
    """The detector's loss (B.4): CE(logits / T_i, y_i), T_i = ``unknown_t`` for the queried
    unknowns (label K), ``known_t`` otherwise."""
    def loss(logits, targets):
        temperature = torch.where(targets == unknown_class, unknown_t, known_t).to(logits.dtype)
        return nn.functional.cross_entropy(logits / temperature[:, None], targets)
    return loss


# ----------------------------------------------------------------------------- the experiment

class Experiment:
    """The data, the open-set pool, the strategy and the results folder of one run of ``script``,
    and the steps of its cycle: ``start_trial``, ``new_model``, ``train``, ``test``, ``query``,
    ``commit``. Checks every input before anything is written."""

    def __init__(self, args, script):
        self.args, self.script = args, script
        self.temperature = script == TEMPERATURE_SCRIPT
        args.max_epoch = _first(args.epochs, args.max_epoch, defaults.FLAGS["max_epoch"])
        args.cycles = _first(args.cycles, args.max_query, defaults.FLAGS["max_query"])
        args.epochs = args.max_query = None  # folded: --max-query/--cycles may grow on resume
        args.trials = self.trials = _first(args.trials, 1)
        _check(args, self.temperature)
        self.cfg = _settings(args.overrides)
        self.strategy = _strategy(args, script, {"state", "mc_dropout"} | ({"unknown_class"} if self.temperature
                                                                            else set()))
        self.dist = _device(args)
        self.data = self._load_data()
        self.run = self._start_run()

    def _load_data(self):
        args = self.args
        mean, std = defaults.NORMALISATION.get(args.dataset.lower(), (None, None))
        data = load_data(args, args.dataset, mean=mean, std=std)
        if self.cfg["ROTATION"]:
            data.train_transform = RandomRotation(data.train_transform, self.cfg["ROTATION"])
        self.targets = data.train_targets  # the original classes: the oracle
        self.known = choose_known_classes(data.num_classes, args.known_class, args.known_classes_random, args.seed)
        self.K = len(self.known)
        self.pool = init_percent_pool(self.targets, self.known, args.init_percent, args.seed, data.train_idx)
        needed = args.cycles * args.query_batch
        if needed > len(self.pool.pool_idx):
            raise UserError(f"budget larger than the pool: --max-query x --query-batch = {args.cycles} x "
                            f"{args.query_batch} = {needed} > {len(self.pool.pool_idx)} unlabeled images; "
                            "lower --max-query or --query-batch")
        return known_class_view(data, self.pool).to(self.dist.device)

    def _start_run(self):
        args, data = self.args, self.data
        name = (f"{args.model}_{data.name}_known{args.known_class}_init{args.init_percent}_batch{args.query_batch}"
                f"_seed{args.seed}_{args.query_strategy}")
        label = f"{data.name} {args.model} known:{self.K} init:{args.init_percent}% {self.strategy.name}"
        if self.temperature:  # the seed's file names (B.7)
            name = f"temperature_{name}_unknown_T{args.unknown_T}_known_T{args.known_T}_modelB_T{args.modelB_T}"
            label += f" T:{args.known_T}/{args.unknown_T}"
        if args.known_classes_random:
            name += "_randomknown"
        args.out = args.out or os.path.join(args.save_dir, name.replace(os.sep, "-").replace(":", "-"))
        settings = {"strategy_name": self.strategy.name, "known_classes": self.known.tolist(),
                    "num_known": self.pool.num_known, "lfosa_config": self.cfg}
        return start_run(args, self.script, settings, data, self.dist, (), label, self.trials, args.cycles,
                         columns=CYCLE_COLUMNS + OPENSET_COLUMNS)

    # ------------------------------------------------------------------ the cycle's steps
    def cycles(self, trial):
        return range(self.run.first_cycle(trial), self.args.cycles)

    def start_trial(self, trial):
        """Seeds trial ``trial`` and returns its sets: L0 = init-percent of the known images
        (seeded per trial), I = {}; or the sets after its last finished cycle (resume)."""
        seed_everything(self.args.seed + trial)
        self.pool = init_percent_pool(self.targets, self.known, self.args.init_percent, self.args.seed + trial,
                                      self.data.train_idx)
        sets = LabelSets(self.pool.labeled_idx, np.empty(0, dtype=np.int64), {})
        saved = self.run.restore(trial)
        if saved:
            sets = LabelSets(saved["labeled_idx"].numpy(), saved["invalid_idx"].numpy(), saved["state"])
        return sets

    def new_model(self, num_outputs, queries=False):
        """A freshly initialised 2-d-bottleneck ResNet; the querying model gets dropout when the
        strategy samples MC dropout (BALD)."""
        dropout = self.cfg["MC_DROPOUT"] if queries and "mc_dropout" in self.strategy.needs else 0.0
        return BottleneckResNet(defaults.MODELS[self.args.model.lower()], num_outputs, self.data.in_channels,
                                self.cfg["WIDTH"], self.cfg["BOTTLENECK"], dropout).to(self.dist.device)

    def center_loss(self):
        """The cycle's center loss (weight --weight-cent, own SGD at --lr-cent)."""
        return CenterLossTerm(self.K, self.cfg["BOTTLENECK"], self.args.weight_cent, self.args.lr_cent, self.dist)

    def train(self, members, center, desc):
        """--max-epoch epochs; per epoch one pass of every member in turn (augmented view), then
        every member's StepLR steps (B.4). SGD --lr-model, momentum 0.9, weight decay 5e-4."""
        args, data, dist = self.args, self.data, self.dist
        nets = [distributed.wrap(m.model, dist) for m in members]
        optimizers = [torch.optim.SGD(net.parameters(), lr=args.lr_model, momentum=self.cfg["MOMENTUM"],
                                      weight_decay=self.cfg["WEIGHT_DECAY"]) for net in nets]
        schedulers = [torch.optim.lr_scheduler.StepLR(o, args.stepsize, args.gamma) for o in optimizers]
        loaders = [make_loader(data.train, m.indices, args.batch_size, True, np.random.randint(2**31), dist,
                               args.workers) for m in members]
        bar = self.run.progress(range(args.max_epoch), desc)
        for epoch in bar:
            for member, net, optimizer, loader in zip(members, nets, optimizers, loaders):
                loader.sampler.set_epoch(epoch)
                net.train()
                total = 0.0
                for images, targets, _ in loader:
                    if len(images) < 2:  # BatchNorm cannot train on one image (1x1 maps on small inputs)
                        continue
                    targets = targets.to(dist.device)
                    out = net(data.train_transform(images.to(dist.device)))
                    loss = member.loss(out.logits, targets) + center(out.features, targets)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    center.step()
                    total += loss.item()
                self.run.log_epoch(bar, f"{desc}/{member.name}", epoch, total / max(len(loader), 1))
            for scheduler in schedulers:
                scheduler.step()
            if (epoch + 1) % args.eval_freq == 0 and epoch + 1 < args.max_epoch:
                accs = ", ".join(f"{m.name} {self.test(m.model):.2f}%" for m in members)
                self.run.log(f"{desc} epoch {epoch + 1}: test accuracy {accs}")

    def test(self, model):
        """Top-1 accuracy (%) on the known-class test set (a K+1-way model may answer K: wrong)."""
        return evaluate(model, self.data, self.args.batch_size, self.dist, self.args.workers)

    def query(self, model, sets, extras=None):
        """--query-batch indices of the pool chosen by the strategy with ``model`` (plain view)."""
        candidates = self.strategy.candidates(sets.pool(self.data.train_idx))
        outputs = distributed.unwrap(model).linear.out_features
        ctx = QueryContext(model, dataclasses.replace(self.data, num_classes=outputs), sets.labeled, candidates,
                           self.args.query_batch, self.dist, self.args.batch_size, self.args.workers,
                           extras={"state": sets.state, "mc_dropout": True, **(extras or {})},
                           mc_samples=self.cfg["MC_SAMPLES"])
        return self.strategy.select(ctx)

    def commit(self, trial, cycle, sets, queried, test_acc, times):
        """The oracle splits the query: knowns join L, unknowns join I; both leave U. Records the
        cycle (test accuracy, query precision and recall) and returns the new sets."""
        known, unknown, metrics = split_query(self.pool, self.targets, queried, len(sets.labeled))
        invalid = np.concatenate([sets.invalid, unknown])
        labeled = self.run.commit(trial, cycle, sets.labeled, known, test_acc, times,
                                  {"invalid_idx": torch.as_tensor(invalid), "state": sets.state}, extra=metrics)
        self.run.log(f"  query {self.args.query_strategy}: {metrics['n_queried_known']}/{metrics['n_queried']} known "
                     f"|| precision {metrics['precision']:.4f} || recall {metrics['recall']:.4f} || "
                     f"unlabeled left {len(self.data.train_idx) - len(labeled) - len(invalid)}")
        for key in ("precision", "recall"):
            self.run.scalar(f"trial{trial}/{key}", metrics[key], cycle)
        return LabelSets(labeled, invalid, sets.state)

    def close(self):
        self.run.close()
        distributed.cleanup(self.dist)
