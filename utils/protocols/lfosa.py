"""What LfOSA's two entry scripts share (Ning et al., CVPR'22; spec 004 B).

``AL_center.py`` runs the baselines (one K-way classifier, trained and used for querying);
``AL_center_temperature.py`` runs LfOSA (detector A with K+1 outputs, classifier B with K).
Both parse the seed's flags (B.1), which set the keys of config/lfosa.py's trees, plus the common
ones (:func:`parse_args` returns the run-control args and the frozen settings ``cfg``) and work
through an :class:`Experiment`, which only reads them:

* data (B.2): known classes 0..K-1 (or a seeded random choice), mapped to labels 0..K-1 with every
  unknown class mapped to K; init-percent of the known images labeled; the test set holds the
  known classes only; the seed's CIFAR normalisation (MEAN, STD), crop, flip and a random rotation of 15 degrees;
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

import config
from config.lfosa import SEED_STRATEGIES, SERVES, TEMPERATURE_SCRIPT
from models import build_model
from utils.core import distributed
from utils.core.cli import add_inert_flags, add_refused_flags, count, parse_script_args, path, str2bool
from utils.core.config import Settings
from utils.core.data import load_data, make_loader
from utils.core.errors import UserError
from utils.core.loop import start_run
from utils.core.openset import choose_known_classes, init_percent_pool, known_class_view, split_query
from utils.core.results import CYCLE_COLUMNS, OPENSET_COLUMNS
from utils.core.rng import seed_everything
from utils.core.train import EvalScores, evaluate, train_one_epoch
from utils.methods import features
from utils.methods.center_loss import CenterLossTerm
from utils.samplers import QueryContext, get_strategy
from utils.samplers.registry import Need

# ----------------------------------------------------------------------------- command line

INERT_FLAGS = {"--print-freq": "the seed's batch-loss print interval; here the progress bar shows the loss"}
REFUSED_SWITCHES = {"--plot": "the seed's per-epoch 2-d feature scatter is not supported; plot results with plot.py"}
TRUE_ONLY = dict.fromkeys(("--is-filter", "--is-mini"), "False is not supported: the open-set split is always used "
                                                        "(True, the default, is accepted)")


def parse_args(argv: list | None, script: str) -> tuple[argparse.Namespace, Settings]:
    """(run-control args, frozen settings) of ``script``: the seed's flags (B.1) set the keys of
    config/lfosa.py's tree; --gpu, --use-cpu, --save-dir, -j/--workers are run control."""
    return parse_script_args(config.tree(script),
                             f"{script}: active learning for open-set annotation (Ning et al., CVPR'22)", argv,
                             add_run_args, refuse=lambda flag, value: flag not in TRUE_ONLY or not value)


def add_run_args(parser: argparse.ArgumentParser) -> None:
    """The seed's flags that are run control (not settings), inert or refused."""
    group = parser.add_argument_group("run control (the seed's flags)")
    group.add_argument("-j", dest="workers", type=count, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    group.add_argument("--gpu", default=None, type=gpu_indices,
                       help="CUDA device index, e.g. 0 (the seed's 0,1 lists: the first is used; ignored, with a "
                       "notice, without CUDA; default: the current device)")
    group.add_argument("--use-cpu", action="store_true", help="run on the CPU")
    group.add_argument("--save-dir", default="log_AL/", type=path,
                       help="results go to <save-dir>/<the seed's run name> (--out overrides; default log_AL/)")
    add_inert_flags(parser, INERT_FLAGS)
    add_refused_flags(parser, REFUSED_SWITCHES, action="store_true")
    add_refused_flags(parser, TRUE_ONLY, type=str2bool)


def gpu_indices(text: str) -> str:
    """The seed's --gpu value: CUDA device indices, comma-separated (argparse type)."""
    if not all(part.strip().isdigit() for part in text.split(",")):
        raise argparse.ArgumentTypeError(f"expected a device index such as 0 (or 0,1), got {text!r}")
    return text


def get_lfosa_strategy(cfg: Settings):
    """The registry's strategy QUERY_STRATEGY names (the seed's names mapped), checked against
    what the script serves (config/lfosa.py SERVES). Strategies that train networks of their own alongside the
    classifier (a training hook: VAAL, WAAL, LearningLoss) are refused: LfOSA's loop runs none."""
    name = SEED_STRATEGIES.get(cfg.QUERY_STRATEGY.lower(), cfg.QUERY_STRATEGY)
    hint = "" if cfg.script == TEMPERATURE_SCRIPT else \
        f"; for unknown_class (LfOSA's detector) run it with {TEMPERATURE_SCRIPT}"
    return get_strategy(name, SERVES[cfg.script], where=cfg.script, hint=hint, runs_hooks=False)


def device_and_rank(args: argparse.Namespace) -> tuple[str, int | None, str | None]:
    """(device, local rank, notice) for ``distributed.setup`` from --device and the seed's
    --use-cpu and --gpu: the CUDA device --gpu names when CUDA is in use (one process; under a
    launcher each rank takes its local rank's device)."""
    device = "cpu" if args.use_cpu else args.device
    if args.gpu is None:
        return device, args.local_rank, None
    if device == "cpu" or not torch.cuda.is_available():
        return device, args.local_rank, f"--gpu {args.gpu} ignored: no CUDA device in use, running on the CPU"
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return device, args.local_rank, f"--gpu {args.gpu} ignored under a launcher: every rank uses its local " \
                                        "rank's GPU"
    gpu = int(args.gpu.split(",")[0])
    if not 0 <= gpu < torch.cuda.device_count():
        raise UserError(f"--gpu {gpu}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return device, gpu, None


def run_name(cfg: Settings, dataset: str) -> str:
    """The seed's name of a run (B.7), the folder under --save-dir."""
    name = (f"{cfg.MODEL}_{dataset}_known{cfg.KNOWN_CLASS}_init{cfg.INIT_PERCENT}_batch{cfg.QUERY_BATCH}"
            f"_seed{cfg.SEED}_{cfg.QUERY_STRATEGY}")
    if cfg.script == TEMPERATURE_SCRIPT:
        name = f"temperature_{name}_unknown_T{cfg.UNKNOWN_T}_known_T{cfg.KNOWN_T}_modelB_T{cfg.MODELB_T}"
    if cfg.KNOWN_CLASSES_RANDOM:
        name += "_randomknown"
    return name.replace(os.sep, "-").replace(":", "-")


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
    """The data, the open-set pool, the strategy and the results folder of one run of
    ``cfg.script``, and the steps of its cycle: ``start_trial``, ``new_model``, ``train``,
    ``test``, ``query``, ``commit``. Reads the settings ``cfg`` and the run-control ``args``
    (never writes them); checks every input before anything is written."""

    def __init__(self, args: argparse.Namespace, cfg: Settings):
        self.args, self.cfg, self.script = args, cfg, cfg.script
        features.check_settings(cfg)
        self.temperature = cfg.script == TEMPERATURE_SCRIPT
        self.strategy = get_lfosa_strategy(cfg)
        device, local_rank, notice = device_and_rank(args)
        self.dist = distributed.setup(device, local_rank, args.amp, args.channels_last)
        if notice and self.dist.is_main:
            print(f"notice: {notice}", flush=True)
        self.data = self._load_data()
        self.features = features.feature_source(cfg, self.data, self.dist, args.data_root)  # (--features)
        self.init = features.init_strategy(cfg)  # (--init-strategy)
        self.embeddings = features.query_embeddings(self.strategy, self.features, cfg)
        self.run = self._start_run()

    def _load_data(self):
        cfg = self.cfg
        data = load_data(cfg, self.args, mean=cfg.MEAN, std=cfg.STD)
        if cfg.ROTATION:
            data.train_transform = RandomRotation(data.train_transform, cfg.ROTATION)
        self.targets = data.train_targets  # the original classes: the oracle
        self.known = choose_known_classes(data.num_classes, cfg.KNOWN_CLASS, cfg.KNOWN_CLASSES_RANDOM, cfg.SEED)
        self.K = len(self.known)
        self.pool = init_percent_pool(self.targets, self.known, cfg.INIT_PERCENT, cfg.SEED, data.train_idx)
        needed = cfg.MAX_QUERY * cfg.QUERY_BATCH
        if needed > len(self.pool.pool_idx):
            raise UserError(f"budget larger than the pool: --max-query x --query-batch = {cfg.MAX_QUERY} x "
                            f"{cfg.QUERY_BATCH} = {needed} > {len(self.pool.pool_idx)} unlabeled images; "
                            "lower --max-query or --query-batch")
        return known_class_view(data, self.pool).to(self.dist.device)

    def _start_run(self):
        cfg, data = self.cfg, self.data
        label = f"{data.name} {cfg.MODEL} known:{self.K} init:{cfg.INIT_PERCENT}% {self.strategy.name}"
        if self.temperature:
            label += f" T:{cfg.KNOWN_T}/{cfg.UNKNOWN_T}"
        derived = {"strategy_name": self.strategy.name, "known_classes": self.known.tolist(),
                   "num_known": self.pool.num_known}
        return start_run(self.args, cfg, data, self.dist, (), label, cfg.MAX_QUERY,
                         columns=CYCLE_COLUMNS + OPENSET_COLUMNS, derived=derived,
                         out=os.path.join(self.args.save_dir, run_name(cfg, data.name)), out_flag="--save-dir")

    # ------------------------------------------------------------------ the cycle's steps
    @property
    def trials(self) -> int:
        return self.cfg.TRIALS

    def cycles(self, trial: int) -> range:
        return self.run.cycles_left(trial)

    def start_trial(self, trial: int) -> LabelSets:
        """Seeds trial ``trial`` and returns its sets: L0 = init-percent of the known images
        (seeded per trial; --init-strategy: chosen by it among the known images), I = {}; or the sets
        after its last finished cycle (resume)."""
        cfg = self.cfg
        seed_everything(cfg.SEED + trial)
        self.pool = init_percent_pool(self.targets, self.known, cfg.INIT_PERCENT, cfg.SEED + trial,
                                      self.data.train_idx)
        if self.init is not None:  # --init-strategy: as many known images, chosen on the feature source
            train_idx = self.data.train_idx
            known = train_idx[np.isin(self.targets[train_idx], self.known)]
            labeled = features.initial_set(self.init, self.features, self.data, known, len(self.pool.labeled_idx),
                                           self.dist, cfg.SEED + trial, cfg)
            self.pool = dataclasses.replace(self.pool, labeled_idx=labeled, pool_idx=np.setdiff1d(train_idx, labeled))
        sets = LabelSets(self.pool.labeled_idx, np.empty(0, dtype=np.int64), {})
        saved = self.run.restore(trial)
        if saved:
            sets = LabelSets(saved["labeled_idx"].numpy(), saved["invalid_idx"].numpy(), saved["state"])
        return sets

    def new_model(self, num_outputs: int, queries: bool = False) -> nn.Module:
        """A freshly initialised 2-d-bottleneck ResNet; the querying model gets dropout when the
        strategy samples MC dropout (BALD)."""
        cfg = self.cfg
        dropout = cfg.MC_DROPOUT if queries and Need.MC_DROPOUT in self.strategy.needs else 0.0
        return build_model(f"lfosa_{cfg.MODEL}", num_outputs, self.data.in_channels, width=cfg.WIDTH,
                           bottleneck=cfg.BOTTLENECK, dropout=dropout).to(self.dist.device)

    def center_loss(self) -> CenterLossTerm:
        """The cycle's center loss (weight WEIGHT_CENT, own SGD at LR_CENT)."""
        return CenterLossTerm(self.K, self.cfg.BOTTLENECK, self.cfg.WEIGHT_CENT, self.cfg.LR_CENT, self.dist)

    def train(self, members: list, center: CenterLossTerm, desc: str) -> None:
        """MAX_EPOCH epochs; per epoch one pass of every member in turn (augmented view), then
        every member's StepLR(STEPSIZE, GAMMA) steps (B.4). SGD LR_MODEL, MOMENTUM, WEIGHT_DECAY."""
        cfg, data, dist = self.cfg, self.data, self.dist
        nets = [distributed.wrap(m.model, dist) for m in members]
        optimizers = [torch.optim.SGD(net.parameters(), lr=cfg.LR_MODEL, momentum=cfg.MOMENTUM,
                                      weight_decay=cfg.WEIGHT_DECAY) for net in nets]
        schedulers = [torch.optim.lr_scheduler.StepLR(o, cfg.STEPSIZE, cfg.GAMMA) for o in optimizers]
        loaders = [make_loader(data.train, m.indices, cfg.BATCH_SIZE, True, np.random.randint(2**31), dist,
                               self.data.workers) for m in members]
        bar = self.run.progress(range(cfg.MAX_EPOCH), desc)
        for epoch in bar:
            for member, net, optimizer, loader in zip(members, nets, optimizers, loaders):
                net.train()
                total, batches = train_one_epoch(loader, self.step(member, net, optimizer, center), self.run, bar,
                                                 epoch, optimizer)  # never a batch of one image (make_loader)
                self.run.log_epoch(bar, f"{desc}/{member.name}", epoch, total / max(batches, 1),
                                   optimizer.param_groups[0]["lr"])
            for scheduler in schedulers:
                scheduler.step()
            if (epoch + 1) % cfg.EVAL_FREQ == 0 and epoch + 1 < cfg.MAX_EPOCH:
                accs = ", ".join(f"{m.name} {self.test(m.model).acc:.2f}%" for m in members)
                self.run.log(f"{desc} epoch {epoch + 1}: test accuracy {accs}")

    def step(self, member: Member, net: nn.Module, optimizer: torch.optim.Optimizer, center: CenterLossTerm):
        """The training step of ``member`` (its loss + the shared center loss, the centres' own SGD step)."""
        data, dist = self.data, self.dist

        def step(batch):
            targets = batch.targets.to(dist.device)
            out = net(data.train_transform(batch.images.to(dist.device)))
            loss = member.loss(out.logits, targets) + center(out.features, targets)
            optimizer.zero_grad(set_to_none=True)
            dist.precision.backward(loss)
            dist.precision.step(optimizer)
            center.step()
            dist.precision.update()
            return loss.detach()
        return step

    def test(self, model: nn.Module) -> EvalScores:
        """Top-1 accuracy (%) on the known-class test set, overall and per class (a K+1-way model may
        answer K: wrong)."""
        return evaluate(model, self.data, self.cfg.BATCH_SIZE, self.dist, self.data.workers)

    def query(self, model: nn.Module, sets: LabelSets, extras: dict | None = None) -> np.ndarray:
        """QUERY_BATCH indices of the pool chosen by the strategy with ``model`` (plain view)."""
        cfg = self.cfg
        candidates = self.strategy.candidates(sets.pool(self.data.train_idx))
        outputs = distributed.unwrap(model).linear.out_features
        ctx = QueryContext(model, dataclasses.replace(self.data, num_classes=outputs), sets.labeled, candidates,
                           cfg.QUERY_BATCH, self.dist, cfg.BATCH_SIZE, self.data.workers,
                           extras={"state": sets.state, **(extras or {})}, mc_samples=cfg.MC_SAMPLES,
                           settings=cfg, embeddings=self.embeddings)
        return self.strategy.select(ctx)

    def commit(self, trial: int, cycle: int, sets: LabelSets, queried: np.ndarray, test_acc: EvalScores,
               times: dict, models: dict) -> LabelSets:
        """The oracle splits the query: knowns join L, unknowns join I; both leave U. Records the
        cycle (test accuracy, query precision and recall; with SAVE_MODEL the cycle's ``models``,
        name -> network) and returns the new sets."""
        if self.cfg.SAVE_MODEL:
            for name, model in models.items():
                self.run.save_model(trial, cycle, model, name)
        known, unknown, metrics = split_query(self.pool, self.targets, queried, len(sets.labeled))
        invalid = np.concatenate([sets.invalid, unknown])
        labeled = self.run.commit(trial, cycle, sets.labeled, known, test_acc, times,
                                  {"invalid_idx": torch.as_tensor(invalid), "state": sets.state}, extra=metrics)
        self.run.log(f"  query {self.cfg.QUERY_STRATEGY}: {metrics['n_queried_known']}/{metrics['n_queried']} known "
                     f"|| precision {metrics['precision']:.4f} || recall {metrics['recall']:.4f} || "
                     f"unlabeled left {len(self.data.train_idx) - len(labeled) - len(invalid)}")
        for key in ("precision", "recall"):
            self.run.scalar(f"trial{trial}/{key}", metrics[key], cycle)
        return LabelSets(labeled, invalid, sets.state)

    def close(self) -> None:
        self.run.close()
        distributed.cleanup(self.dist)
