"""Rethinking deep AL's protocol (Simeoni et al., ICPR'20; spec B) for main_al.py: class-balanced
split files, a fresh network every cycle (optionally from DeepCluster weights, or fine-tuned from
the last cycle), SGD with Nesterov and a per-iteration cosine, and the two ways of using the
unlabeled images: label propagation (+SEMI) and CEAL's confident pseudo-labels."""

from __future__ import annotations

import argparse
import math
import os

import numpy as np
import torch
from torch import nn

from config.rethinking import INPUT_SIZE, LP_LABELED_BATCH, METHODS, SERVES
from models import build_model
from utils.core import distributed
from utils.core.cli import add_inert_flags, add_refused_flags, count, path, positive, str2bool
from utils.core.data import cycled_batches, make_batch_loader
from utils.core.errors import UserError
from utils.core.oracles import open_set
from utils.core.rng import seed_everything
from utils.core.splits import make_split, pool_fingerprint, read_split, split_path, write_split
from utils.core.train import fit, predict, softmax_probs
from utils.methods import deepcluster
from utils.methods.label_propagation import knn_graph, propagate, pseudo_labels
from utils.protocols.pool import PoolProtocol, Trial
from utils.samplers import entropy_scores
from utils.samplers.registry import Need

INERT = {  # the seed's flags that change nothing here, and why
    **dict.fromkeys(("--train-subdir", "--eval-subdir", "--test-subdir"), "the pool is train+val, as the seed's "
                    "default"),
    "--exclude-unlabeled": "the training batches follow --add-lp, as the seed forces",
    **dict.fromkeys(("--exp_name", "--ema-decay", "--ceal-repeat"), "it only named the seed's output folder"),
    "--initial_set_size": "the initial set is the split file of --al-budget images",
    "--is_cW": "the seed computes class weights and never applies them",
    "--is_pW": "samples are always weighted by their certainty (1 for labels), as the seed forces under --add-lp",
    **dict.fromkeys(("--checkpoint-epochs", "--evaluation-epochs"), "--resume continues from the last finished "
                    "cycle"),
    "--print-freq|-p": "progress bars report the loss",
    "--evaluate|-e": "the seed never reads it",
}
REFUSED = {
    "--use_val_set": "--use_val_set is not supported: the pool is train+val, as the seed's default",
    "--sobel": "--sobel is not supported (the seed's Sobel front end)",
    "--weighted_unlabeled_batch": "--weighted_unlabeled_batch is not supported (it crashes in the seed with LP)",
    "--loss_type": "--loss_type accepts ce only (the seed's kl and mse are experimental)",
    "--ssl": "--ssl is a choice of --protocol deepal (this protocol's semi-supervised parts are --add-lp and "
             "--add-ceal)",
}
# the settings DeepCluster weights record and must match, besides the dataset, pool and arch (weights_provenance)
PROVENANCE_KEYS = ("PRETRAIN_EPOCHS", "PRETRAIN_LR", "PRETRAIN_BATCH_SIZE", "SEED", "IMAGE_SIZE")


def rethinking_lr(cfg, epoch: float) -> float:
    """Per-iteration LR at fractional ``epoch`` (B.4): linear ramp-up from INITIAL_LR over
    LR_RAMPUP epochs, times a cosine ramp-down reaching 0 at LR_RAMPDOWN_EPOCHS."""
    lr = cfg.LR
    if cfg.LR_RAMPUP:
        lr = cfg.INITIAL_LR + (cfg.LR - cfg.INITIAL_LR) * min(1.0, epoch / cfg.LR_RAMPUP)
    return lr * 0.5 * (1 + math.cos(math.pi * epoch / cfg.LR_RAMPDOWN_EPOCHS))


class Rethinking(PoolProtocol):
    """``--protocol rethinking``."""

    NAME = "rethinking"
    INITIAL_SET_KEY = "SPLIT"
    STRATEGY_FLAG, CYCLES_KEY = "--al-method", "AL_NB_CYCLES"
    SERVES = SERVES

    @staticmethod
    def add_run_args(parser) -> None:
        """--make-splits and DeepCluster's folder (not settings), the seed's inert and refused flags."""
        group = parser.add_argument_group("split files and DeepCluster weights")
        group.add_argument("--make-splits", action="store_true", help="write class-balanced split files and stop")
        group.add_argument("--nr-splits", type=positive, default=5, help="split files --make-splits writes (default 5)")
        group.add_argument("--split-size", type=positive, default=100,
                           help="labels per split file of --make-splits (default 100)")
        group.add_argument("--pretrained-dir", default="./pretrained", type=path,
                           help="where DeepCluster weights are saved and loaded (default ./pretrained)")
        parser.add_argument("-j", dest="workers", type=count, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
        add_inert_flags(parser, INERT)
        add_refused_flags(parser, REFUSED)

    @staticmethod
    def refuse(flag: str, value) -> bool:
        """A refused flag is an error unless given its default (False, or ce)."""
        if flag == "--loss_type":
            return str(value).lower() != "ce"
        try:
            return str2bool(value)
        except Exception:
            return True

    def strategy_name(self) -> str:
        if not self.cfg.AL_METHOD:
            raise UserError("--al-method is required: random, uncertainty_entropy, coreset, jlp, or a registered "
                            "strategy")
        return self.registry_name(self.cfg.AL_METHOD)

    def registry_name(self, name: str) -> str:
        return METHODS.get(name, name)  # the seed's names as it writes them

    def load_data(self):
        """The dataset with the seed's normalisation, translation by TRANSLATE px of 32 (reflect) and
        flips; images smaller than the architecture's input are resized up."""
        cfg = self.cfg
        native = self.load_images(mean=cfg.MEAN, std=cfg.STD, flip=cfg.FLIP, pad_mode="reflect")
        native.train_transform.crop_padding = max(1, round(cfg.TRANSLATE * native.image_size / 32))
        size = INPUT_SIZE[cfg.ARCH]
        return native.resize_inputs(size) if native.image_size < size else native

    def side_task(self) -> bool:
        """--make-splits: write --nr-splits class-balanced initial sets of --split-size labels, drawn
        from the pool a run with these settings would label (and where such a run reads them)."""
        args, cfg = self.args, self.cfg
        if not args.make_splits:
            return False
        data, oracle = open_set(self.load_data(), cfg.KNOWN_CLASSES, cfg.KNOWN_CLASSES_RANDOM, cfg.SEED)
        labelable = oracle.labelable(data.train_idx)
        for split in range(args.nr_splits):
            path = self.split_file(data, labelable, args.split_size, split)
            write_split(path, make_split(data.train_targets, labelable, args.split_size, split), data.train_targets)
            print(path)
        return True

    def split_file(self, data, labelable: np.ndarray, size: int, split: int) -> str:
        """Where split ``split`` of ``size`` labels drawn from ``labelable`` lives: the seed's path
        when that is the whole training set, else a folder named by the pool's fingerprint
        (a --max-train-samples subset, the known classes of an open set)."""
        cfg = self.cfg
        name = data.name + (f"-known{cfg.KNOWN_CLASSES}" + ("-random" if cfg.KNOWN_CLASSES_RANDOM else "")
                            if cfg.KNOWN_CLASSES else "")
        pool = None if len(labelable) == len(data.train) else labelable
        return split_path(self.args.data_root, name, size, split, pool)

    def fit_inputs(self) -> None:
        """DeepCluster weights to load (+PRE alone, or kept on --resume) and the split files are read
        and checked here, before anything is written."""
        cfg = self.cfg
        self.dropout = cfg.MC_DROPOUT if Need.MC_DROPOUT in self.strategy.needs else 0.0
        add, learn = cfg.ADD_UNSUPERVISED_PRETRAINING, cfg.LEARN_UNSUPERVISED_PRETRAINING
        self.use_pretrained = add or learn
        self.pretrained, self.trunk = self.weights_path(), None
        kept = learn and self.args.resume and os.path.isfile(self.pretrained)
        if add and not learn or kept:
            self.trunk = self.read_weights()
        self.check_split_files()
        if cfg.PRETRAINED:  # a wrong model or an unreadable file stops here, before anything is written
            self.imagenet_init(self.new_model())

    def check_split_files(self) -> None:
        """Read the trials' split files that exist now, so that one of another pool stops the run
        before anything is written."""
        cfg, data = self.cfg, self.data
        if data.own is not None:
            return
        for trial in range(cfg.TRIALS):
            path = self.split_file(data, self.labelable, cfg.AL_BUDGET, cfg.SPLIT + trial)
            if os.path.isfile(path):
                read_split(path, self.labelable)

    def weights_path(self) -> str:
        """``--pretrained-dir``/deepcluster_<dataset>_<arch>.pt; to load without it there, the seed's
        released file for the dataset (seed_weights_name) when --pretrained-dir holds it."""
        cfg, folder = self.cfg, self.args.pretrained_dir
        ours = os.path.join(folder, f"deepcluster_{self.data.name.replace(os.sep, '-')}_{cfg.ARCH}.pt")
        seed = deepcluster.seed_weights_name(self.data.name, cfg.ARCH)
        if cfg.LEARN_UNSUPERVISED_PRETRAINING or os.path.isfile(ours) or not seed:
            return ours
        return os.path.join(folder, seed) if os.path.isfile(os.path.join(folder, seed)) else ours

    def weights_provenance(self) -> dict:
        """What DeepCluster weights depend on: saved with them, checked when they are loaded."""
        cfg, pool = self.cfg, self.data.train_idx
        return {"dataset": self.data.name, "pool": pool_fingerprint(pool), "pool_size": len(pool), "arch": cfg.ARCH,
                **{key: cfg[key] for key in PROVENANCE_KEYS}}

    def read_weights(self) -> dict:
        """The trunk of ``self.pretrained``, checked (deepcluster.read_trunk)."""
        if not os.path.isfile(self.pretrained):
            seed = deepcluster.seed_weights_name(self.data.name, self.cfg.ARCH)
            raise UserError(f"no DeepCluster weights at {self.pretrained}: run once with "
                            "--learn-unsupervised-pretraining True (it trains and saves them there)" +
                            (f", or put the seed's {seed} in --pretrained-dir" if seed else ""))
        return deepcluster.read_trunk(self.pretrained, self.weights_provenance(), self.new_model())

    def plan(self, pool_size: int) -> int:
        """AL_NB_CYCLES; the budget must fit in the pool (own images: queries stop when it is empty)."""
        cfg = self.cfg
        self.query = query = cfg.QUERY_SIZE or cfg.AL_BUDGET  # --query-size, else the initial split's size
        if self.data.own is None and cfg.AL_BUDGET + cfg.AL_NB_CYCLES * query > pool_size:
            raise UserError(f"budget larger than the pool: --al-budget {cfg.AL_BUDGET} + {cfg.AL_NB_CYCLES} cycles x "
                            f"{query} queried > {pool_size} training samples")
        return cfg.AL_NB_CYCLES

    def derived(self) -> dict:
        return {"strategy_name": self.strategy.name, "method": self.method()}

    def method(self) -> str:
        cfg = self.cfg
        return self.strategy.name + ("+PRE" if self.use_pretrained else "") + ("+SEMI" if cfg.ADD_LP else "") + (
            "+CEAL" if cfg.ADD_CEAL else "")

    def names(self) -> tuple[tuple, str]:
        parts = ("rethinking", self.data.name, self.cfg.ARCH, self.method())
        return parts, " ".join(parts[1:])

    def new_model(self):
        cfg, data = self.cfg, self.data
        options = {"cifar_cnn": {"l2_normalize": cfg.ISL2}, "lenet": {"image_size": data.image_size}}.get(
            cfg.ARCH, {"consistency_head": False, "dropout": self.dropout})
        return build_model(cfg.ARCH, data.num_classes, data.in_channels, **options)

    def pretrain(self, run) -> None:
        """--learn-unsupervised-pretraining: DeepCluster on the whole pool, saved to --pretrained-dir
        with its provenance (kept on --resume)."""
        cfg, dist = self.cfg, self.dist
        if self.trunk is not None:
            run.log(f"+PRE: every cycle starts from the DeepCluster weights {self.pretrained}")
            return
        if not cfg.LEARN_UNSUPERVISED_PRETRAINING:
            return
        seed_everything(cfg.SEED)
        learner = self.new_model().to(dist.device)
        deepcluster.pretrain(learner, self.data, self.data.train_idx, self.data.num_classes, cfg.PRETRAIN_EPOCHS,
                             cfg.PRETRAIN_BATCH_SIZE, cfg.PRETRAIN_LR, dist, run, cfg.SEED, self.data.workers)
        if dist.is_main:
            deepcluster.save_trunk(learner, self.pretrained, self.weights_provenance())
        distributed.barrier(dist)
        self.trunk = self.read_weights()
        run.log(f"DeepCluster weights saved to {self.pretrained}")

    def start_trial(self, trial: int, labelable: np.ndarray) -> Trial:
        """L_0: the split file SPLIT + trial of the pool (split_file); a missing file is made
        (deterministically) and saved. Own images: PATH/labeled/; --init-strategy: AL_BUDGET images
        chosen by it on the feature source."""
        cfg, data = self.cfg, self.data
        if data.own is not None:
            return Trial(labelable)
        if self.init is not None:  # --init-strategy: chosen on the feature source instead of a split file
            return Trial(self.initial_set(labelable, cfg.AL_BUDGET, trial))
        path = self.split_file(data, labelable, cfg.AL_BUDGET, cfg.SPLIT + trial)
        if os.path.isfile(path):
            return Trial(read_split(path, labelable))
        indices = make_split(data.train_targets, labelable, cfg.AL_BUDGET, cfg.SPLIT + trial)
        try:
            write_split(path, indices, data.train_targets)
        except UserError:
            pass  # a read-only data root (atomic_write's one line): the split is the same on every run anyway
        return Trial(indices)

    def models(self, state: Trial, cycle: int) -> list:
        """A fresh network (its trunk from DeepCluster with +PRE; --finetuning: last cycle's weights)."""
        model = self.imagenet_init(self.new_model())
        if self.trunk is not None:
            deepcluster.load_trunk(model, self.trunk)
        if self.cfg.FINETUNING and state.previous is not None:
            model.load_state_dict(state.previous)
        return [model.to(self.dist.device)]

    def keeps_previous(self) -> bool:
        return super().keeps_previous() or self.cfg.FINETUNING

    def train(self, model, state: Trial, pool_idx: np.ndarray, hook, run, desc: str) -> None:
        CycleTraining(self, model, state, pool_idx, hook).fit(run, desc)

    def query_size(self, cycle: int, state: Trial) -> int:
        return self.query

    def after_query(self, run, trial, cycle, model, state, pool_idx, queried) -> None:
        """CEAL (Wang et al., 2017) as the paper means it: unlabeled samples whose normalised entropy
        is below CEAL_TH - CEAL_DECAY c join the next cycle's training set with the predicted label."""
        cfg = self.cfg
        if not cfg.ADD_CEAL:
            return
        remaining = np.setdiff1d(pool_idx, queried)
        probs = predict(model, self.data, remaining, softmax_probs, cfg.TEST_BATCH, self.dist, self.data.workers,
                        desc="ceal")
        entropy = entropy_scores(probs) / math.log(self.data.num_classes)
        confident = (entropy < cfg.CEAL_TH - cfg.CEAL_DECAY * cycle).numpy()
        state.pseudo_idx, state.pseudo_labels = remaining[confident], probs.argmax(1).numpy()[confident]


class CycleTraining:
    """One cycle's training (B.4, B.6): EPOCHS epochs of weighted cross-entropy over the labeled
    set plus CEAL's pseudo-labels of the last cycle; with ADD_LP the pseudo-labels of label
    propagation are refreshed before the first epoch and after every epoch past START_EPOCH (every
    LP_STEP), and batches hold BATCH_SIZE - l pseudo-labelled + l labeled images."""

    def __init__(self, protocol: Rethinking, model, state: Trial, pool_idx: np.ndarray, hook):
        self.p, self.cfg, self.data, self.dist = protocol, protocol.cfg, protocol.data, protocol.dist
        self.model, self.net, self.hook = model, distributed.wrap(model, protocol.dist), hook
        self.labeled_idx, self.pool_idx = state.labeled_idx, pool_idx
        cfg = self.cfg
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=cfg.LR, momentum=cfg.MOMENTUM,
                                         nesterov=cfg.NESTEROV, weight_decay=cfg.WEIGHT_DECAY)
        self.label_of = torch.full((len(self.data.train),), -1, dtype=torch.long)
        self.weight_of = torch.zeros(len(self.data.train))
        self.label_of[state.labeled_idx] = torch.as_tensor(self.data.train_targets[state.labeled_idx])
        self.label_of[state.pseudo_idx] = torch.as_tensor(state.pseudo_labels, dtype=torch.long)
        self.weight_of[state.labeled_idx] = self.weight_of[state.pseudo_idx] = 1.0
        self.primary = np.concatenate([state.labeled_idx, state.pseudo_idx])  # the shuffled stream of a batch
        if hook:
            self.primary = hook.train_indices(self.primary)
        self.seed = np.random.randint(2**31)
        self.labeled_per_batch = 0
        if cfg.ADD_LP:
            self.labeled_per_batch = LP_LABELED_BATCH.get(cfg.BATCH_SIZE, cfg.LABELED_BATCH_SIZE)
            self.refresh_pseudo_labels()

    def refresh_pseudo_labels(self) -> None:
        """LP (B.6) on a kNN graph of the model's features over the whole pool: the pool images
        drawn for the next epoch (LP_MODE), their labels and certainty weights."""
        cfg, data, pool_idx = self.cfg, self.data, self.pool_idx
        features = predict(self.model, data, data.train_idx, lambda out, _y: out.features.float(), cfg.TEST_BATCH,
                           self.dist, self.data.workers, desc="label propagation").numpy()
        graph = knn_graph(features, use_gpu=self.dist.device.type == "cuda")
        labeled_pos = np.searchsorted(data.train_idx, self.labeled_idx)
        labels, weights = pseudo_labels(propagate(graph, labeled_pos, data.train_targets[self.labeled_idx],
                                                  data.num_classes))
        pool_pos = np.searchsorted(data.train_idx, pool_idx)
        count = len(pool_idx) if cfg.LP_MODE == "full" else int(round(len(pool_idx) * cfg.LP_PERCENT))
        if cfg.LP_MODE == "prob":  # without replacement, ~ weight (Gumbel top-k); weight 0 comes last
            with np.errstate(divide="ignore"):
                keys = np.log(weights[pool_pos]) + np.random.gumbel(size=len(pool_pos))
            chosen = np.argsort(-keys, kind="stable")[:count]
        elif cfg.LP_MODE == "uniform":
            chosen = np.random.permutation(len(pool_pos))[:count]
        else:
            chosen = np.arange(len(pool_pos))
        chosen = chosen[weights[pool_pos[chosen]] >= cfg.TAU]
        picked = pool_idx[chosen]
        self.label_of[pool_idx], self.weight_of[pool_idx] = -1, 0.0
        self.label_of[picked] = torch.as_tensor(labels[pool_pos[chosen]])
        self.weight_of[picked] = torch.as_tensor(weights[pool_pos[chosen]], dtype=torch.float32)
        self.primary = picked

    def batches(self, epoch: int) -> list:
        """The epoch's batches (dataset indices), the same on every rank: the primary stream
        shuffled (drop_last) and, under LP, each topped up with labeled images reshuffled and
        cycled endlessly."""
        rng = np.random.default_rng([self.seed, epoch])
        size = self.cfg.BATCH_SIZE - self.labeled_per_batch
        order = rng.permutation(self.primary)
        batches = [order[i:i + size] for i in range(0, max(len(order) - size + 1, 1), size)]
        if self.labeled_per_batch:
            labeled = cycled_batches(rng, self.labeled_idx, len(batches), self.labeled_per_batch)
            batches = [np.concatenate([b, extra]) for b, extra in zip(batches, labeled)]
        return [b.tolist() for b in batches if len(b)]

    def step(self, batch) -> torch.Tensor:
        lr = rethinking_lr(self.cfg, batch.position)
        indices = batch.indices
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        x, y = self.data.train_transform(batch.images.to(self.dist.device)), self.label_of[indices].to(self.dist.device)
        out = self.net(x)
        per_sample = nn.functional.cross_entropy(out.logits, y, ignore_index=-1, reduction="none")
        loss = (per_sample * self.weight_of[indices].to(self.dist.device)).sum() / len(indices)
        hook = self.hook
        if hook:
            hook.set_lr(lr)
            loss = loss + hook.extra_loss(self.net, out, x, y, batch.epoch)
            hook.zero_grad()
        self.optimizer.zero_grad(set_to_none=True)
        self.dist.precision.minimize(loss, self.optimizer,
                                     before_update=(lambda: hook.step(out, batch.epoch)) if hook else None)
        return loss.detach()

    def end_epoch(self, epoch: int) -> None:
        cfg = self.cfg
        if cfg.ADD_LP and cfg.START_EPOCH < epoch < cfg.EPOCHS - 1 and epoch % cfg.LP_STEP == 0:
            self.refresh_pseudo_labels()  # (after the last epoch it would change nothing)

    def fit(self, run, desc: str) -> None:
        loader = make_batch_loader(self.data.train, self.batches, self.dist, self.data.workers)
        fit(loader, self.cfg.EPOCHS, self.step, run, desc, lambda _e: self.net.train(), self.end_epoch,
            optimizer=self.optimizer)
