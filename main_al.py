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

--protocol rethinking: Simeoni et al., ICPR'20 (not in this version yet).
"""

import copy
import math
import os

import numpy as np
import torch
from torch import nn

from config import deepal as toolkit
from models import build_model
from utils import distributed
from utils.cli import ArgumentParser, UserError, add_common_args, run_cli
from utils.data import load_data, make_loader
from utils.loop import start_run
from utils.results import atomic_write
from utils.samplers import QueryContext, get_strategy, list_strategies
from utils.splits import random_subset
from utils.train import evaluate, fit, seed_everything

PROTOCOLS = ("rethinking", "deepal")
DEEPAL_PROVIDES = {"state", "ensemble", "previous_model", "mc_dropout"}  # what run_deepal gives strategies


def parse_args(argv=None):
    first = ArgumentParser(add_help=False)
    first.add_argument("--protocol", type=str.lower, choices=PROTOCOLS, default="rethinking")
    protocol = first.parse_known_args(argv)[0].protocol
    parser = ArgumentParser(description="Pool-based deep active learning (main_al.py); --protocol deepal --help "
                                        "lists the toolkit's flags")
    parser.add_argument("--protocol", type=str.lower, choices=PROTOCOLS, default="rethinking")
    if protocol == "deepal":
        add_deepal_args(parser)
    add_common_args(parser)
    if protocol == "deepal":
        parser.set_defaults(seed=1)  # the toolkit's default
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
    group.add_argument("--save_model", action="store_true", help="save every round's model under <out>/models/")
    group.add_argument("--data_path", default=None, help="the toolkit's name for --data-root")
    group.add_argument("--save_path", default=None, help="the toolkit's name for --out")


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


def train_round(model, data, labeled_idx, args, batch, schedule, dist, run, desc):
    """n_epoch epochs of cross-entropy on L, as the toolkit's Strategy.train."""
    net = distributed.wrap(model, dist)
    if args.optimizer == "SGD":
        optimizer = torch.optim.SGD(net.parameters(), lr=args.lr, momentum=args.momentum,
                                    weight_decay=toolkit.WEIGHT_DECAY)
    else:
        optimizer = torch.optim.Adam(net.parameters(), lr=args.lr, weight_decay=toolkit.WEIGHT_DECAY)
    loader = make_loader(data.train, labeled_idx, batch, True, np.random.randint(2**31), dist, args.workers)

    def start_epoch(epoch):
        net.train()
        lr = args.lr * math.prod(g for m, g in zip(schedule, args.gammas) if epoch >= m)
        for group in optimizer.param_groups:
            group["lr"] = lr

    def step(images, targets):
        loss = nn.functional.cross_entropy(net(data.train_transform(images.to(dist.device))).logits,
                                           targets.to(dist.device))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_value_(net.parameters(), toolkit.GRAD_CLIP)
        optimizer.step()
        return loss.item()

    fit(loader, args.n_epoch, step, run, desc, start_epoch)


def run_deepal(args):
    dist = distributed.setup(args.device, args.local_rank)
    strategy = get_strategy(args.strategy)
    missing = sorted(set(strategy.needs) - DEEPAL_PROVIDES)
    if missing:
        raise UserError(f"strategy {strategy.name} needs {', '.join(missing)}, which the deepal protocol does not "
                        "provide yet")
    model_key = {name.lower(): name for name in toolkit.MODELS}.get(args.model.lower())
    if model_key is None:
        raise UserError(f"unknown --model {args.model!r}; choose from {', '.join(toolkit.MODELS)}")
    model_name, model_options = toolkit.MODELS[model_key]
    dataset = args.dataset or "cifar10"
    hp = toolkit.DATASETS.get(dataset, toolkit.OTHER_DATASET)
    data = load_data(args, dataset, **{k: v for k, v in hp.items() if k != "batch"}).to(dist.device)
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
                    f"{data.name} {model_key} {strategy.name}", trials, cycles)

    for trial in range(trials):
        seed_everything(args.seed + trial)
        initial = [build_model(model_name, data.num_classes, data.in_channels, **model_options).to(dist.device)
                   for _ in range(members)]  # f_0 (and the other ensemble members' own initial weights)
        labeled_idx = random_subset(data.train_idx, start)
        state = {}  # what a strategy keeps across the trial's queries (ClusterMargin's clusters)
        previous = copy.deepcopy(initial[0])  # the previous round's model, for TOD
        saved = run.restore(trial)
        if saved:
            labeled_idx, state = saved["labeled_idx"].numpy(), saved["state"]
            if "previous_model" in saved:
                previous.load_state_dict(saved["previous_model"])

        for cycle in range(run.first_cycle(trial), cycles):
            times = {}
            with run.timer(times, "train_seconds"):
                models = [copy.deepcopy(m) for m in initial]
                for m, member in enumerate(models):
                    train_round(member, data, labeled_idx, args, hp["batch"], schedule, dist, run,
                                f"trial{trial}/cycle{cycle}" + (f"/member{m}" if members > 1 else ""))
            model = models[0]
            acc = evaluate(model, data, toolkit.TEST_BATCH, dist, args.workers)
            with run.timer(times, "query_seconds"):
                queried = np.empty(0, dtype=np.int64)
                if cycle < rounds:
                    pool_idx = np.setdiff1d(data.train_idx, labeled_idx)
                    extras = {"state": state, "ensemble": models, "previous_model": previous, "mc_dropout": True}
                    ctx = QueryContext(model, data, labeled_idx, pool_idx, min(query, end - len(labeled_idx)), dist,
                                       toolkit.TEST_BATCH, args.workers, extras=extras, mc_samples=toolkit.MC_SAMPLES)
                    queried = strategy.select(ctx)
            if args.save_model and dist.is_main:
                atomic_write(os.path.join(run.folder.path, "models", f"trial{trial}_cycle{cycle}.pt"),
                             lambda fh, m=model: torch.save(m.state_dict(), fh))
            previous = model
            checkpoint = {"state": state}
            if "previous_model" in strategy.needs:
                checkpoint["previous_model"] = previous.state_dict()
            labeled_idx = run.commit(trial, cycle, labeled_idx, queried, acc, times, checkpoint)
    run.close()
    distributed.cleanup(dist)


def main(argv=None):
    args = parse_args(argv)
    if args.protocol == "deepal":
        run_deepal(args)
    else:
        raise UserError("--protocol rethinking (the default) is not available in this version yet; "
                        "use --protocol deepal")


if __name__ == "__main__":
    run_cli(main)
