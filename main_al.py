"""Pool-based deep active learning with any registered strategy, under two protocols.

--protocol deepal: the 20-strategy toolkit (cure-lab deep-active-learning; spec 003, sections 1-4)

    N <- pool size; L <- int(nStart% of N) random samples; f_0 <- a fresh network (seeded)
    for round r = 0 .. R   (R = ceil((nEnd% - nStart%) N / (nQuery% N))):
        f <- a copy of f_0 trained on L for n_epoch epochs
             (SGD lr, momentum, wd 5e-4; lr x gamma at each milestone; gradients clamped to 0.1)
        test f
        if r < R: L <- L + strategy(f, U) with nQuery% of N labels (the last round: what is left)

    python main_al.py --protocol deepal --model ResNet18 --dataset cifar10 --strategy BadgeSampling \\
        --nStart 10 --nQuery 1 --nEnd 20

--protocol rethinking (the default): Simeoni et al., ICPR'20 (spec B)

    L <- the class-balanced split file --split (al-budget labels); optionally DeepCluster weights W_pre
    for cycle c = 0 .. al-nb-cycles - 1:
        f <- a fresh network (its trunk <- W_pre with --add-unsupervised-pretraining)
        train f for --epochs epochs: SGD 0.2 Nesterov, wd 2e-4, per-iteration cosine LR to 0 at epoch 210;
            supervised: batches of 32 from L (+ CEAL's confident pseudo-labels of the last cycle)
            --add-lp: label propagation on a kNN graph of f's features at the start and after every
            epoch; batches of 78 pseudo-labelled (drawn ~ certainty) + 50 labeled, loss weighted
        test f
        L <- L + al-budget queried by --al-method (random, uncertainty_entropy, coreset, jlp, or any
             registered strategy); --add-ceal: confident unlabeled samples get f's label for cycle c+1

    python main_al.py --dataset cifar10 --al-method uncertainty_entropy --split 0 --al-budget 100
    python main_al.py --make-splits --dataset cifar10 --nr-splits 10 --split-size 1000
"""

import argparse
import copy
import math
import os

import numpy as np
import torch
from torch import nn

from config import deepal as toolkit
from config import rethinking
from models import build_model
from utils.core import distributed
from utils.core.cli import ArgumentParser, UserError, add_common_args, run_cli, str2bool
from utils.core.data import load_data, make_batch_loader, make_loader
from utils.core.loop import start_run
from utils.core.openset import open_set
from utils.core.results import atomic_write
from utils.core.splits import make_split, random_subset, read_split, split_path, write_split
from utils.core.train import evaluate, fit, predict, seed_everything, softmax_probs
from utils.methods import deepcluster
from utils.methods.deepcluster import load_trunk
from utils.methods.label_propagation import knn_graph, propagate, pseudo_labels
from utils.samplers import QueryContext, entropy_scores, get_strategy, list_strategies

PROTOCOLS = ("rethinking", "deepal")
DEEPAL_PROVIDES = {"state", "ensemble", "previous_model", "mc_dropout"}  # what run_deepal gives strategies
RETHINKING_PROVIDES = {"state", "previous_model", "mc_dropout"}
RETHINKING_METHODS = {"random": "RandomSampling", "uncertainty_entropy": "EntropySampling",
                      "coreset": "KCenterGreedy", "jlp": "jLP"}  # the seed's coreset is the greedy k-center


def parse_args(argv=None):
    first = ArgumentParser(add_help=False)
    first.add_argument("--protocol", type=str.lower, choices=PROTOCOLS, default="rethinking")
    protocol = first.parse_known_args(argv)[0].protocol
    parser = ArgumentParser(description="Pool-based deep active learning (main_al.py); --protocol deepal --help "
                                        "lists the toolkit's flags")
    parser.add_argument("--protocol", type=str.lower, choices=PROTOCOLS, default="rethinking")
    if protocol == "deepal":
        add_deepal_args(parser)
    else:
        add_rethinking_args(parser)
    group = parser.add_argument_group("open set (either protocol)")
    group.add_argument("--known-classes", type=int, default=None,
                       help="only K classes are known: queried images of the others are discarded, and "
                            "cycles.csv records the query's precision and recall")
    group.add_argument("--known-classes-random", action="store_true",
                       help="a seeded random choice of the known classes (default: classes 0..K-1)")
    add_common_args(parser)
    parser.set_defaults(seed=1 if protocol == "deepal" else 7)  # the seeds' defaults
    args = parser.parse_args(argv)
    if protocol == "deepal":
        args.data_root = args.data_path or args.data_root
        args.out = args.save_path or args.out
    return args


def add_deepal_args(parser):
    """The toolkit's flags (spec 003, section 1)."""
    group = parser.add_argument_group("deepal protocol (the 20-strategy toolkit)")
    group.add_argument("--strategy", required=True, help=f"one of: {', '.join(list_strategies())}")
    group.add_argument("--model", default="ResNet18", help=f"one of: {', '.join(toolkit.MODELS)}")
    group.add_argument("--nStart", type=float, default=10, help="percent of the pool labeled at random at start")
    group.add_argument("--nQuery", type=float, default=1, help="percent of the pool queried per round (-1: one query)")
    group.add_argument("--nEnd", type=float, default=100, help="percent of the pool labeled at the end (-1: 100)")
    group.add_argument("--nEmb", type=int, default=256, help="accepted for compatibility; unused, as in the toolkit")
    group.add_argument("--n_epoch", type=int, default=100, help="epochs per round (every round retrains from f_0)")
    group.add_argument("--lr", type=float, default=0.1)
    group.add_argument("--momentum", type=float, default=0.9)
    group.add_argument("--schedule", type=int, nargs="+", default=[80, 120], help="LR milestones (epochs)")
    group.add_argument("--gammas", type=float, nargs="+", default=[0.1, 0.1], help="LR factor at each milestone")
    group.add_argument("--optimizer", choices=["SGD", "Adam"], default="SGD")
    group.add_argument("--n_ensembles", type=int, default=5, help="members of the Ensembles strategy")
    group.add_argument("-n", "--hidden_units", type=int, default=128, help="GCN hidden width (UncertainGCN, CoreGCN)")
    group.add_argument("-r", "--dropout_rate", type=float, default=0.3, help="GCN dropout")
    group.add_argument("-l", "--lambda_loss", type=float, default=1.2, help="GCN weight of the unlabeled term")
    group.add_argument("-s", "--s_margin", type=float, default=0.1, help="UncertainGCN confidence margin")
    group.add_argument("--asal_steps", type=int, default=2000, help="GAN training steps of ASAL per query")
    group.add_argument("--save_model", action="store_true", help="save every round's model under <out>/models/")
    group.add_argument("--data_path", default=None, help="the toolkit's name for --data-root")
    group.add_argument("--save_path", default=None, help="the toolkit's name for --out")


def add_rethinking_args(parser):
    """The seed's flags (spec B.1) plus --make-splits and DeepCluster settings."""
    group = parser.add_argument_group("rethinking protocol (Simeoni et al., ICPR'20)")
    add = group.add_argument
    add("--al-method", default=None, help="random, uncertainty_entropy, coreset, jlp, or any registered strategy")
    add("--al-budget", type=int, default=100, help="labels per cycle and size of the initial split")
    add("--al-nb-cycles", type=int, default=10, help="AL cycles (trainings)")
    add("--split", type=int, default=0, help="initial split file; trial t uses split + t")
    add("--arch", "-a", default="cifar_cnn", help="cifar_cnn (the 13-layer ConvNet), resnet18, resnet34, lenet")
    add("-b", "--batch-size", type=int, default=32)
    add("--labeled-batch-size", type=int, default=None, help="labeled images per batch with --add-lp")
    add("--lr", "--learning-rate", type=float, default=0.2)
    add("--initial-lr", type=float, default=0.0)
    add("--lr-rampup", type=int, default=0)
    add("--lr-rampdown-epochs", type=int, default=210)
    add("--momentum", type=float, default=0.9)
    add("--nesterov", type=str2bool, default=True)
    add("--weight-decay", "--wd", type=float, default=2e-4)
    add("--isL2", type=str2bool, default=True, help="L2-normalise the feature before the classifier")
    add("--start-epoch", type=int, default=0, help="label propagation runs after the epochs past this one")
    add("--finetuning", type=str2bool, default=False, help="start cycle c from cycle c-1's model")
    add("--add-ceal", type=str2bool, default=False)
    add("--ceal-th", type=float, default=0.1)
    add("--add-unsupervised-pretraining", type=str2bool, default=False)
    add("--learn-unsupervised-pretraining", type=str2bool, default=False)
    add("--add-lp", type=str2bool, default=False)
    add("--lp-mode", choices=["prob", "uniform", "full"], default="prob")
    add("--lp-percent", type=float, default=0.5)
    add("--lp-step", type=int, default=1)
    add("--is_pW", type=int, default=0, help="weight the loss of each sample (always on with --add-lp)")
    add("--tau", type=float, default=0.0, help="certainty threshold of the pseudo-labels")
    add("--loss_type", choices=["ce"], default="ce")
    add("--make-splits", action="store_true", help="write class-balanced split files and stop")
    add("--nr-splits", type=int, default=5)
    add("--split-size", type=int, default=100)
    add("--pretrained-dir", default="./pretrained", help="where DeepCluster weights are saved and loaded")
    add("--pretrain-epochs", type=int, default=400, help="DeepCluster epochs (the seed's learner: 400)")
    add("--pretrain-lr", type=float, default=0.02)
    add("--pretrain-batch-size", type=int, default=128)
    add("--asal-steps", type=int, default=2000, help="GAN training steps of ASAL per query")
    add("-j", dest="workers", type=int, default=0, help=argparse.SUPPRESS)
    for flag in ("--train-subdir", "--eval-subdir", "--test-subdir", "--exp_name", "--ema-decay", "--initial_set_size",
                 "--ceal-repeat", "--is_cW", "--checkpoint-epochs", "--evaluation-epochs", "--print-freq",
                 "--exclude-unlabeled", "-e", "--evaluate"):
        add(flag, default=None, help=argparse.SUPPRESS)  # the seed's flags that do not change a run here
    for flag in ("--use_val_set", "--sobel", "--weighted_unlabeled_batch"):
        add(flag, type=str2bool, default=False, help=argparse.SUPPRESS)


def deepal_budget(args, pool_size):
    """(initial labels, labels per query, total labels, rounds) from the percent flags."""
    start = int(args.nStart * pool_size / 100)
    end = pool_size if args.nEnd == -1 else int(args.nEnd * pool_size / 100)
    query = end - start if args.nQuery == -1 else int(args.nQuery * pool_size / 100)
    if start < 1:
        raise UserError(f"--nStart {args.nStart} labels no sample of the {pool_size}-sample pool; raise --nStart")
    if end > pool_size or end < start:
        raise UserError(f"--nEnd {args.nEnd} must lie between --nStart and 100 (or be -1)")
    if end > start and query < 1:
        raise UserError(f"--nQuery {args.nQuery} queries no sample of the {pool_size}-sample pool; raise --nQuery")
    rounds = math.ceil((end - start) / query) if end > start else 0
    return start, query, end, rounds


def train_round(model, data, labeled_idx, args, batch, schedule, dist, run, desc, hook=None):
    """n_epoch epochs of cross-entropy on L, as the toolkit's Strategy.train; ``hook`` adds a
    strategy's own training (utils/strategy_training.py)."""
    net = distributed.wrap(model, dist)
    if args.optimizer == "SGD":
        optimizer = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum,
                                    weight_decay=toolkit.WEIGHT_DECAY)
    else:
        optimizer = torch.optim.Adam(net.parameters(), lr=args.lr, weight_decay=toolkit.WEIGHT_DECAY)
    indices = hook.train_indices(labeled_idx) if hook else labeled_idx
    loader = make_loader(data.train, indices, batch, True, np.random.randint(2**31), dist, args.workers)
    current = {"epoch": 0}

    def start_epoch(epoch):
        net.train()
        lr = args.lr * math.prod(g for m, g in zip(schedule, args.gammas) if epoch >= m)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if hook:
            hook.set_lr(lr)
        current["epoch"] = epoch

    def step(images, targets):
        x, y = data.train_transform(images.to(dist.device)), targets.to(dist.device)
        out = net(x)
        loss = nn.functional.cross_entropy(out.logits, y)
        if hook:
            loss = loss + hook.extra_loss(net, out, x, y, current["epoch"])
            hook.zero_grad()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_value_(net.parameters(), toolkit.GRAD_CLIP)
        optimizer.step()
        if hook:
            hook.step(out, current["epoch"])
        return loss.item()

    fit(loader, args.n_epoch, step, run, desc, start_epoch)


def hook_provides(strategy):
    return set(strategy.training.PROVIDES) if strategy.training else set()


def run_deepal(args):
    dist = distributed.setup(args.device, args.local_rank)
    strategy = get_strategy(args.strategy)
    missing = sorted(set(strategy.needs) - DEEPAL_PROVIDES - hook_provides(strategy))
    if missing:
        raise UserError(f"strategy {strategy.name} needs {', '.join(missing)}, which the deepal protocol does not "
                        "provide yet")
    model_key = {name.lower(): name for name in toolkit.MODELS}.get(args.model.lower())
    if model_key is None:
        raise UserError(f"unknown --model {args.model!r}; choose from {', '.join(toolkit.MODELS)}")
    model_name, model_options = toolkit.MODELS[model_key]
    dataset = args.dataset or "cifar10"
    hp = toolkit.DATASETS.get(dataset, toolkit.OTHER_DATASET)
    data = load_data(args, dataset, **{k: v for k, v in hp.items() if k != "batch"})
    data, oracle = open_set(data, args.known_classes, args.known_classes_random, args.seed)
    data.to(dist.device)
    if model_name == "lenet" and data.image_size < toolkit.LENET_MIN_SIZE:
        data.resize_inputs(toolkit.LENET_MIN_SIZE)
    if model_name == "lenet":
        model_options = {**model_options, "image_size": data.image_size}
    elif "mc_dropout" in strategy.needs:
        model_options = {**model_options, "dropout": toolkit.MC_DROPOUT, "consistency_head": False}
    else:
        model_options = {**model_options, "consistency_head": False}
    start, query, end, rounds = deepal_budget(args, len(data.train_idx))
    cycles = rounds + 1 if args.cycles is None else args.cycles
    if cycles > rounds + 1:
        raise UserError(f"--cycles {cycles} needs more labels than --nEnd {args.nEnd} allows ({rounds + 1} rounds)")
    epochs = args.epochs or args.n_epoch
    args.n_epoch = epochs
    schedule = toolkit.MNIST_SCHEDULE if dataset == "mnist" else args.schedule
    trials = args.trials or 1
    members = args.n_ensembles if "ensemble" in strategy.needs else 1
    if members < 1:
        raise UserError("--n_ensembles must be at least 1")
    run = start_run(args, "main_al.py", {"model_name": model_name, "model_options": model_options, "n_start": start,
                                         "n_query": query, "n_end": end, "rounds": rounds, "schedule": schedule,
                                         "strategy_name": strategy.name, "members": members},
                    data, dist, ("deepal", data.name, model_key, strategy.name),
                    f"{data.name} {model_key} {strategy.name}", trials, cycles, oracle.columns)

    for trial in range(trials):
        seed_everything(args.seed + trial)
        initial = [build_model(model_name, data.num_classes, data.in_channels, **model_options).to(dist.device)
                   for _ in range(members)]  # f_0 (and the other ensemble members' own initial weights)
        labeled_idx = random_subset(oracle.labelable(data.train_idx), start)
        state = {}  # what a strategy keeps across the trial's queries (ClusterMargin's clusters)
        previous = copy.deepcopy(initial[0])  # the previous round's model, for TOD
        oracle.discarded = np.empty(0, dtype=np.int64)
        saved = run.restore(trial)
        if saved:
            labeled_idx, state = saved["labeled_idx"].numpy(), saved["state"]
            oracle.discarded = saved["discarded"].numpy()
            if "previous_model" in saved:
                previous.load_state_dict(saved["previous_model"])

        for cycle in range(run.first_cycle(trial), cycles):
            times = {}
            pool_idx = oracle.unlabeled(data.train_idx, labeled_idx)
            with run.timer(times, "train_seconds"):
                models = [copy.deepcopy(m) for m in initial]
                hook = strategy.training(models[0], data, labeled_idx, pool_idx, dist, {
                    "lr": args.lr, "momentum": args.momentum, "weight_decay": toolkit.WEIGHT_DECAY,
                    "batch_size": hp["batch"], "workers": args.workers, "grad_clip": toolkit.GRAD_CLIP,
                    "epoch_l": toolkit.LL_DETACH_EPOCH}) if strategy.training else None
                for m, member in enumerate(models):
                    train_round(member, data, labeled_idx, args, hp["batch"], schedule, dist, run,
                                f"trial{trial}/cycle{cycle}" + (f"/member{m}" if members > 1 else ""),
                                hook if m == 0 else None)
            model = models[0]
            acc = evaluate(model, data, toolkit.TEST_BATCH, dist, args.workers)
            with run.timer(times, "query_seconds"):
                queried = np.empty(0, dtype=np.int64)
                if cycle < rounds:
                    extras = {"state": state, "ensemble": models, "previous_model": previous, "mc_dropout": True,
                              "gcn": {"hidden": args.hidden_units, "dropout": args.dropout_rate,
                                      "weight": args.lambda_loss},
                              "gcn_margin": args.s_margin, "asal": {"steps": args.asal_steps},
                              **(hook.extras() if hook else {})}
                    ctx = QueryContext(model, data, labeled_idx, strategy.candidates(pool_idx),
                                       min(query, end - len(labeled_idx) - len(oracle.discarded)), dist,
                                       toolkit.TEST_BATCH, args.workers, extras=extras, mc_samples=toolkit.MC_SAMPLES)
                    queried = strategy.select(ctx)
                labels, columns = oracle.answer(queried, labeled_idx)
            if args.save_model and dist.is_main:
                atomic_write(os.path.join(run.folder.path, "models", f"trial{trial}_cycle{cycle}.pt"),
                             lambda fh, m=model: torch.save(m.state_dict(), fh))
            previous = model
            checkpoint = {"state": state, "discarded": torch.as_tensor(oracle.discarded)}
            if "previous_model" in strategy.needs:
                checkpoint["previous_model"] = previous.state_dict()
            labeled_idx = run.commit(trial, cycle, labeled_idx, labels, acc, times, checkpoint, columns)
    run.close()
    distributed.cleanup(dist)


# ------------------------------------------------------------------------------ rethinking protocol

def rethinking_data(args):
    """The dataset with the seed's normalisation, translation by 4 px (reflect) and flips; images
    smaller than the architecture's input are resized up."""
    dataset = args.dataset or "cifar10"
    mean, std = rethinking.NORMALISATION.get(dataset, (None, None))
    native = load_data(args, dataset, mean=mean, std=std, flip=rethinking.FLIP, pad_mode="reflect")
    native.train_transform.crop_padding = max(1, round(rethinking.TRANSLATE * native.image_size / 32))
    size = rethinking.INPUT_SIZE.get(args.arch.lower(), 32)
    return native.resize_inputs(size) if native.image_size < size else native


def rethinking_model(args, data, dropout):
    name = args.arch.lower()
    options = {"cifar_cnn": {"l2_normalize": args.isL2}, "lenet": {"image_size": data.image_size}}.get(
        name, {"consistency_head": False, "dropout": dropout})
    return build_model(name, data.num_classes, data.in_channels, **options)


def make_splits(args):
    """Write --nr-splits class-balanced initial sets of --split-size labels (one file each)."""
    data = rethinking_data(args)
    for split in range(args.nr_splits):
        path = split_path(args.data_root, data.name, args.split_size, split)
        indices = make_split(data.train_targets, data.train_idx, args.split_size, split)
        write_split(path, indices, data.train_targets)
        print(path)


def initial_split(args, data, split, labelable):
    """The split file's labeled indices (drawn from ``labelable``); a missing file is made
    (deterministically) and saved. Open-set splits have their own files."""
    name = data.name + (f"-known{args.known_classes}" + ("-random" if args.known_classes_random else "")
                        if args.known_classes else "")
    path = split_path(args.data_root, name, args.al_budget, split)
    if os.path.isfile(path):
        return read_split(path, len(data.train))
    indices = make_split(data.train_targets, labelable, args.al_budget, split)
    try:
        write_split(path, indices, data.train_targets)
    except OSError:
        pass  # a read-only data root: the split is the same on every run anyway
    return indices


def rethinking_lr(args, epoch):
    """Per-iteration LR at fractional ``epoch`` (B.4): linear ramp-up from --initial-lr over
    --lr-rampup epochs, times a cosine ramp-down reaching 0 at --lr-rampdown-epochs."""
    lr = args.lr
    if args.lr_rampup:
        lr = args.initial_lr + (args.lr - args.initial_lr) * min(1.0, epoch / args.lr_rampup)
    return lr * 0.5 * (1 + math.cos(math.pi * epoch / args.lr_rampdown_epochs))


def label_propagation(model, data, labeled_idx, pool_idx, args, dist):
    """LP (B.6) on a kNN graph of the model's features over the whole pool: the pseudo-labelled
    unlabeled indices drawn for the next epoch, their labels and certainty weights."""
    features = predict(model, data, data.train_idx, lambda out, _y: out.features.float(), rethinking.TEST_BATCH,
                       dist, args.workers).numpy()
    graph = knn_graph(features, use_gpu=dist.device.type == "cuda")
    labeled_pos = np.searchsorted(data.train_idx, labeled_idx)
    scores = propagate(graph, labeled_pos, data.train_targets[labeled_idx], data.num_classes)
    labels, weights = pseudo_labels(scores)
    pool_pos = np.searchsorted(data.train_idx, pool_idx)
    count = len(pool_idx) if args.lp_mode == "full" else int(round(len(pool_idx) * args.lp_percent))
    if args.lp_mode == "prob":  # without replacement, ~ weight (Gumbel top-k); weight 0 comes last
        with np.errstate(divide="ignore"):
            keys = np.log(weights[pool_pos]) + np.random.gumbel(size=len(pool_pos))
        chosen = np.argsort(-keys, kind="stable")[:count]
    elif args.lp_mode == "uniform":
        chosen = np.random.permutation(len(pool_pos))[:count]
    else:
        chosen = np.arange(len(pool_pos))
    chosen = chosen[weights[pool_pos[chosen]] >= args.tau]
    return pool_idx[chosen], labels[pool_pos[chosen]], weights[pool_pos[chosen]]


def ceal_pseudo_labels(model, data, pool_idx, args, dist, cycle):
    """CEAL (Wang et al., 2017) as the paper means it: unlabeled samples whose normalised entropy
    is below ceal-th - 0.00033 c join the next cycle's training set with the predicted label."""
    probs = predict(model, data, pool_idx, softmax_probs, rethinking.TEST_BATCH, dist, args.workers)
    entropy = entropy_scores(probs) / math.log(data.num_classes)
    confident = (entropy < args.ceal_th - rethinking.CEAL_DECAY * cycle).numpy()
    return pool_idx[confident], probs.argmax(1).numpy()[confident]


def train_rethinking(model, data, labeled_idx, pool_idx, extra, args, dist, run, desc, hook=None):
    """--epochs epochs of weighted cross-entropy (B.4, B.6). ``extra`` = (indices, labels) that
    also train (CEAL). With --add-lp the pseudo-labels are refreshed before the first epoch and
    after every epoch past --start-epoch (every --lp-step). ``hook``: a strategy's own training."""
    net = distributed.wrap(model, dist)
    optimizer = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum, nesterov=args.nesterov,
                                weight_decay=args.weight_decay)
    label_of = torch.full((len(data.train),), -1, dtype=torch.long)
    weight_of = torch.zeros(len(data.train))
    label_of[labeled_idx] = torch.as_tensor(data.train_targets[labeled_idx])
    label_of[extra[0]] = torch.as_tensor(extra[1], dtype=torch.long)
    weight_of[labeled_idx] = weight_of[extra[0]] = 1.0
    train_idx = np.concatenate([labeled_idx, extra[0]])
    if hook:
        train_idx = hook.train_indices(train_idx)
    seed = np.random.randint(2**31)
    primary = [train_idx]

    def refresh_pseudo_labels():
        chosen, labels, weights = label_propagation(model, data, labeled_idx, pool_idx, args, dist)
        label_of[pool_idx], weight_of[pool_idx] = -1, 0.0
        label_of[chosen], weight_of[chosen] = torch.as_tensor(labels), torch.as_tensor(weights, dtype=torch.float32)
        primary[0] = chosen

    labeled_per_batch = 0
    if args.add_lp:
        labeled_per_batch = rethinking.LP_LABELED_BATCH.get(args.batch_size, args.labeled_batch_size)
        if not labeled_per_batch or labeled_per_batch >= args.batch_size:
            raise UserError("--add-lp needs --batch-size 128 or 64, or a --labeled-batch-size below --batch-size")
        refresh_pseudo_labels()

    def make_batches(epoch):
        rng = np.random.default_rng([seed, epoch])
        size = args.batch_size - labeled_per_batch
        order = rng.permutation(primary[0])
        batches = [order[i:i + size] for i in range(0, max(len(order) - size + 1, 1), size)]  # drop_last
        if labeled_per_batch:  # the secondary stream: labeled samples, reshuffled and cycled endlessly
            needed = len(batches) * labeled_per_batch
            stream = np.concatenate([rng.permutation(labeled_idx) for _ in range(-(-needed // len(labeled_idx)))])
            batches = [np.concatenate([b, stream[i * labeled_per_batch:(i + 1) * labeled_per_batch]])
                       for i, b in enumerate(batches)]
        return [b.tolist() for b in batches if len(b)]

    loader = make_batch_loader(data.train, make_batches, dist, args.workers)
    progress = {"epoch": 0, "step": 0, "steps": 1}

    def start_epoch(epoch):
        net.train()
        progress.update(epoch=epoch, step=0, steps=max(1, len(loader)))

    def step(images, _targets, indices):
        lr = rethinking_lr(args, progress["epoch"] + progress["step"] / progress["steps"])
        for group in optimizer.param_groups:
            group["lr"] = lr
        progress["step"] += 1
        x, y = data.train_transform(images.to(dist.device)), label_of[indices].to(dist.device)
        out = net(x)
        per_sample = nn.functional.cross_entropy(out.logits, y, ignore_index=-1, reduction="none")
        loss = (per_sample * weight_of[indices].to(dist.device)).sum() / len(indices)
        if hook:
            hook.set_lr(lr)
            loss = loss + hook.extra_loss(net, out, x, y, progress["epoch"])
            hook.zero_grad()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if hook:
            hook.step(out, progress["epoch"])
        return loss.item()

    def end_epoch(epoch):
        if args.add_lp and args.start_epoch < epoch < args.epochs - 1 and epoch % args.lp_step == 0:
            refresh_pseudo_labels()  # (after the last epoch it would change nothing)

    fit(loader, args.epochs, step, run, desc, start_epoch, end_epoch, with_indices=True)


def run_rethinking(args):
    if args.make_splits:
        return make_splits(args)
    if not args.al_method:
        raise UserError("--al-method is required: random, uncertainty_entropy, coreset, jlp, or a registered strategy")
    for flag in ("use_val_set", "sobel", "weighted_unlabeled_batch"):
        if getattr(args, flag):
            raise UserError(f"--{flag} is not supported (the pool is train+val, as the seed's default)")
    if args.add_lp and args.add_ceal:
        raise UserError("--add-lp and --add-ceal cannot be combined (as in the seed)")
    args.epochs = args.epochs or 200
    if args.epochs > args.lr_rampdown_epochs:
        raise UserError(f"--epochs {args.epochs} exceeds --lr-rampdown-epochs {args.lr_rampdown_epochs}")
    strategy = get_strategy(RETHINKING_METHODS.get(args.al_method, args.al_method))  # the seed's names as written
    missing = sorted(set(strategy.needs) - RETHINKING_PROVIDES - hook_provides(strategy))
    if missing:
        raise UserError(f"strategy {strategy.name} needs {', '.join(missing)}, which the rethinking protocol "
                        "does not provide")
    if args.arch.lower() not in rethinking.INPUT_SIZE:
        raise UserError(f"unknown --arch {args.arch!r}; choose from {', '.join(rethinking.INPUT_SIZE)}")
    dist = distributed.setup(args.device, args.local_rank)
    data, oracle = open_set(rethinking_data(args), args.known_classes, args.known_classes_random, args.seed)
    data.to(dist.device)
    dropout = toolkit.MC_DROPOUT if "mc_dropout" in strategy.needs else 0.0
    cycles = args.cycles or args.al_nb_cycles
    trials = args.trials or 1
    if args.al_budget * (cycles + 1) > len(data.train_idx):
        raise UserError(f"budget larger than the pool: {cycles + 1} x --al-budget {args.al_budget} > "
                        f"{len(data.train_idx)} training samples")
    pretrained = os.path.join(args.pretrained_dir, f"deepcluster_{data.name.replace(os.sep, '-')}_{args.arch}.pt")
    use_pretrained = args.add_unsupervised_pretraining or args.learn_unsupervised_pretraining
    if args.add_unsupervised_pretraining and not args.learn_unsupervised_pretraining and not os.path.isfile(pretrained):
        load_trunk(rethinking_model(args, data, dropout), pretrained)  # the one-line error naming the fix
    method = strategy.name + ("+PRE" if use_pretrained else "") + ("+SEMI" if args.add_lp else "") + (
        "+CEAL" if args.add_ceal else "")
    run = start_run(args, "main_al.py", {"strategy_name": strategy.name}, data, dist,
                    ("rethinking", data.name, args.arch, method), f"{data.name} {args.arch} {method}", trials, cycles,
                    oracle.columns)

    if args.learn_unsupervised_pretraining and not (args.resume and os.path.isfile(pretrained)):
        seed_everything(args.seed)
        learner = rethinking_model(args, data, dropout).to(dist.device)
        deepcluster.pretrain(learner, data, data.train_idx, data.num_classes, args.pretrain_epochs,
                             args.pretrain_batch_size, args.pretrain_lr, dist, run, args.seed, args.workers)
        if dist.is_main:
            deepcluster.save_trunk(learner, pretrained)
        distributed.barrier(dist)
        run.log(f"DeepCluster weights saved to {pretrained}")

    for trial in range(trials):
        seed_everything(args.seed + trial)
        labeled_idx = initial_split(args, data, args.split + trial, oracle.labelable(data.train_idx))
        state, extra, previous = {}, (np.empty(0, np.int64), np.empty(0, np.int64)), None
        oracle.discarded = np.empty(0, dtype=np.int64)
        saved = run.restore(trial)
        if saved:
            labeled_idx, state = saved["labeled_idx"].numpy(), saved["state"]
            oracle.discarded = saved["discarded"].numpy()
            extra = (saved["ceal_idx"].numpy(), saved["ceal_labels"].numpy())
            previous = saved.get("model")

        for cycle in range(run.first_cycle(trial), cycles):
            times = {}
            pool_idx = oracle.unlabeled(data.train_idx, labeled_idx)
            model = rethinking_model(args, data, dropout)
            if use_pretrained:
                load_trunk(model, pretrained)
            if args.finetuning and previous is not None:
                model.load_state_dict(previous)
            model.to(dist.device)
            with run.timer(times, "train_seconds"):
                hook = strategy.training(model, data, labeled_idx, pool_idx, dist, {
                    "lr": args.lr, "momentum": args.momentum, "weight_decay": args.weight_decay,
                    "batch_size": args.batch_size, "workers": args.workers, "grad_clip": None,
                    "epoch_l": toolkit.LL_DETACH_EPOCH}) if strategy.training else None
                train_rethinking(model, data, labeled_idx, pool_idx, extra, args, dist, run,
                                 f"trial{trial}/cycle{cycle}", hook)
            acc = evaluate(model, data, rethinking.TEST_BATCH, dist, args.workers)
            with run.timer(times, "query_seconds"):
                extras = {"state": state, "previous_model": model, "mc_dropout": True,
                          "asal": {"steps": args.asal_steps}, **(hook.extras() if hook else {})}
                ctx = QueryContext(model, data, labeled_idx, strategy.candidates(pool_idx), args.al_budget, dist,
                                   rethinking.TEST_BATCH, args.workers, extras=extras, mc_samples=toolkit.MC_SAMPLES)
                queried = strategy.select(ctx)
            labels, columns = oracle.answer(queried, labeled_idx)
            if args.add_ceal:
                extra = ceal_pseudo_labels(model, data, np.setdiff1d(pool_idx, queried), args, dist, cycle)
            previous = model.state_dict()
            checkpoint = {"state": state, "ceal_idx": torch.as_tensor(extra[0]),
                          "ceal_labels": torch.as_tensor(extra[1]), "discarded": torch.as_tensor(oracle.discarded)}
            if args.finetuning:
                checkpoint["model"] = previous
            labeled_idx = run.commit(trial, cycle, labeled_idx, labels, acc, times, checkpoint, columns)
    run.close()
    distributed.cleanup(dist)


def main(argv=None):
    args = parse_args(argv)
    if args.protocol == "deepal":
        run_deepal(args)
    else:
        run_rethinking(args)


if __name__ == "__main__":
    run_cli(main)
