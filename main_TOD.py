"""TOD: Semi-Supervised Active Learning with Temporal Output Discrepancy (Huang et al., ICCV'21).

Per trial (spec A.5-A.7):

    L <- START random training samples, U <- the rest
    for cycle c = 0 .. CYCLES-1:
        train f on L for EPOCH epochs (warm start; a fresh SGD + MultiStepLR each cycle)
            loss = CE(L) + WEIGHT * [COD(x_L) + COD(x_U)]              (--auxiliary TOD)
            COD(x) = MSE(z, z') + MSE(z', z_ema): both heads agree, the consistency head
            follows the EMA teacher, theta_ema <- a theta_ema + (1 - a) theta after every step
        test f
        S <- random SUBSET of U; score(x) = 1/2 ||softmax f_c(x) - softmax f_{c-1}(x)||^2
        L <- L + the ADDENDUM top scores of S (the lowest at c = 0, see --tod-cycle0)
        f_{c-1} <- f_c

    python main_TOD.py --config cifar10 --sampling TOD --auxiliary TOD
"""

import numpy as np
import torch
from torch import nn

import config
from config.tod import SAMPLING
from models import model_from_config
from utils.core import distributed
from utils.core.cli import parse_script_args, run_cli
from utils.core.data import forever, load_data, make_loader
from utils.core.loop import check_budget, start_run
from utils.core.rng import seed_everything
from utils.core.splits import random_subset
from utils.core.train import evaluate, fit
from utils.methods import features
from utils.methods.losses import cod_loss, ema_update
from utils.samplers import QueryContext, get_strategy


def parse_args(argv=None):
    """(run-control args, frozen settings): config/tod.py's main_TOD.py tree."""
    return parse_script_args(config.tree("main_TOD.py"), "TOD active learning (Huang et al., ICCV'21)", argv)


def frozen(model):
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def train_cycle(model, ema, data, labeled_idx, pool_idx, cfg, args, dist, run, step, desc):
    """EPOCH epochs of CE (+ WEIGHT * COD on a labeled and an unlabeled batch per step); returns
    the trial's step count, which drives the EMA decay."""
    net = distributed.wrap(model, dist)
    optimizer = torch.optim.SGD(net.parameters(), lr=cfg.LR, momentum=cfg.MOMENTUM, weight_decay=cfg.WDECAY)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=cfg.MILESTONES, gamma=0.1)
    labeled = make_loader(data.train, labeled_idx, cfg.BATCH, True, np.random.randint(2**31), dist, data.workers)
    unlabeled = forever(make_loader(data.train, pool_idx, cfg.BATCH, True, np.random.randint(2**31), dist,
                                    data.workers)) if ema is not None else None
    augment = data.train_transform
    teacher = dist.precision.wrap(ema) if ema is not None else None

    def train_step(batch):
        x_l, y = augment(batch.images.to(dist.device)), batch.targets.to(dist.device)
        out_l = net(x_l)
        loss = nn.functional.cross_entropy(out_l.logits, y)
        if ema is not None:
            x_u = augment(next(unlabeled)[0].to(dist.device))
            out_u = net(x_u)
            with torch.no_grad():  # the teacher runs in train mode (batch statistics), as TOD
                ema_l, ema_u = teacher(x_l).logits, teacher(x_u).logits
            loss = loss + cfg.WEIGHT * (cod_loss(out_l.logits, out_l.cons_logits, ema_l)
                                        + cod_loss(out_u.logits, out_u.cons_logits, ema_u))
        optimizer.zero_grad(set_to_none=True)
        dist.precision.minimize(loss, optimizer)
        if ema is not None:
            ema_update(ema, model, batch.step + 1)
        return loss.detach()

    step = fit(labeled, cfg.EPOCH, train_step, run, desc, epoch_start=lambda _e: net.train(),
               epoch_end=lambda _e: scheduler.step(), optimizer=optimizer, first_step=step)
    if ema is not None:  # the teacher's BatchNorm statistics (of each rank's batches) as rank 0's, which it saves
        distributed.broadcast_buffers(ema, dist)
    return step


def main(argv=None):
    args, cfg = parse_args(argv)
    features.check_settings(cfg)
    dist = distributed.setup(args.device, args.local_rank, args.amp, args.channels_last)
    data = load_data(cfg, args).to(dist.device)
    check_budget(cfg.START, cfg.ADDENDUM, cfg.CYCLES, len(data.train_idx))
    initial = features.initial_chooser(cfg, data, dist, args.data_root)  # START at random, or --init-strategy
    use_cod = cfg.AUXILIARY == "TOD"
    strategy = get_strategy(SAMPLING[cfg.SAMPLING])
    if cfg.PRETRAINED:  # missing or unreadable ImageNet weights stop the run before it writes anything
        model_from_config(cfg, data, pretrained=True)
    run = start_run(args, cfg, data, dist, ("TOD", data.name, cfg.SAMPLING, cfg.AUXILIARY),
                    f"{data.name} auxiliary:{cfg.AUXILIARY} sampling:{cfg.SAMPLING}", cfg.CYCLES)

    for trial in range(cfg.TRIALS):
        seed_everything(cfg.SEED + trial)
        model = model_from_config(cfg, data, consistency_head=use_cod, pretrained=True).to(dist.device)
        ema = frozen(model_from_config(cfg, data, use_cod).to(dist.device)) if use_cod else None  # own random init
        previous = frozen(model_from_config(cfg, data, use_cod).to(dist.device)) if cfg.SAMPLING == "TOD" else None
        labeled_idx = initial(data.train_idx, cfg.START, trial)
        step = 0  # optimisation steps of this trial: the EMA decay schedule runs over them
        saved = run.restore(trial)
        if saved:
            model.load_state_dict(saved["model"])
            if ema is not None:
                ema.load_state_dict(saved["ema"])
            if previous is not None:
                previous.load_state_dict(saved["model"])
            labeled_idx, step = saved["labeled_idx"].numpy(), saved["step"]

        for cycle in run.cycles_left(trial):
            times = {}
            pool_idx = np.setdiff1d(data.train_idx, labeled_idx)
            with run.timer(times, "train_seconds"):
                step = train_cycle(model, ema, data, labeled_idx, pool_idx, cfg, args, dist, run, step,
                                   f"trial{trial}/cycle{cycle}")
            acc = evaluate(model, data, cfg.BATCH, dist, data.workers)
            with run.timer(times, "query_seconds"):
                candidates = random_subset(pool_idx, min(cfg.SUBSET, len(pool_idx)))
                ctx = QueryContext(model, data, labeled_idx, candidates, cfg.ADDENDUM, dist, cfg.BATCH,
                                   data.workers, extras={"previous_model": previous} if previous is not None else {},
                                   settings=cfg, cycle=cycle)
                queried = strategy.select(ctx)
            if cfg.SAVE_MODEL:
                run.save_model(trial, cycle, model)
            checkpoint = {"model": model.state_dict(), "step": step}
            if ema is not None:
                checkpoint["ema"] = ema.state_dict()
            labeled_idx = run.commit(trial, cycle, labeled_idx, queried, acc, times, checkpoint)
            if previous is not None:
                previous.load_state_dict(model.state_dict())  # f_{c-1} <- f_c
    run.close()
    distributed.cleanup(dist)


if __name__ == "__main__":
    run_cli(main)
