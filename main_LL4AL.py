"""LL4AL: Learning Loss for Active Learning (Yoo & Kweon, CVPR'19), TOD's baseline script.

Per trial (spec A.8):

    L <- START random training samples, U <- the rest
    for cycle c = 0 .. CYCLES-1:
        train backbone f and loss module m on L for EPOCH epochs (warm start; fresh SGD each
        cycle, only the backbone's LR follows MultiStepLR)
            loss = mean CE + 1.0 * ranking loss(m(stage features), per-sample CE; MARGIN)
            the stage features are detached after epoch EPOCHL (always with --auxiliary NONE)
        test f
        S <- random SUBSET of U; L <- L + the ADDENDUM largest predicted losses m(x) in S

    python main_LL4AL.py --config svhn --sampling LL4AL --auxiliary LL4AL
"""

import numpy as np
import torch
from torch import nn

import config
from config.tod import SAMPLING
from models import build_model, model_from_config
from utils.core import distributed
from utils.core.cli import parse_script_args, run_cli
from utils.core.data import load_data, make_loader
from utils.core.loop import check_budget, start_run
from utils.core.rng import seed_everything
from utils.core.splits import random_subset
from utils.core.train import evaluate, fit
from utils.methods import features
from utils.methods.losses import ranking_loss
from utils.samplers import QueryContext, get_strategy


def parse_args(argv=None):
    """(run-control args, frozen settings): config/tod.py's main_LL4AL.py tree."""
    return parse_script_args(config.tree("main_LL4AL.py"),
                             "LL4AL active learning (Yoo & Kweon, CVPR'19), as in TOD's code", argv)


def train_cycle(model, module, data, labeled_idx, cfg, args, dist, run, desc):
    net, loss_net = distributed.wrap(model, dist), distributed.wrap(module, dist)
    sgd = dict(lr=cfg.LR, momentum=cfg.MOMENTUM, weight_decay=cfg.WDECAY)
    optimizer = torch.optim.SGD(net.parameters(), **sgd)
    module_optimizer = torch.optim.SGD(loss_net.parameters(), **sgd)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=cfg.MILESTONES, gamma=0.1)
    labeled = make_loader(data.train, labeled_idx, cfg.BATCH, True, np.random.randint(2**31), dist, data.workers)
    def start_epoch(_epoch):
        net.train()
        loss_net.train()

    def train_step(batch):
        out = net(data.train_transform(batch.images.to(dist.device)))
        target_loss = nn.functional.cross_entropy(out.logits, batch.targets.to(dist.device), reduction="none")
        joint = cfg.AUXILIARY == "LL4AL" and batch.epoch <= cfg.EPOCHL  # the module's gradient reaches the backbone
        stages = out.stages if joint else [s.detach() for s in out.stages]
        loss = target_loss.mean() + cfg.LL_WEIGHT * ranking_loss(loss_net(stages), target_loss, cfg.MARGIN)
        optimizer.zero_grad(set_to_none=True)
        module_optimizer.zero_grad(set_to_none=True)
        dist.precision.minimize(loss, optimizer, before_update=lambda: dist.precision.step(module_optimizer))
        return loss.detach()

    # only the backbone's LR follows the schedule; the module's stays at LR, as LL4AL in TOD's code
    fit(labeled, cfg.EPOCH, train_step, run, desc, start_epoch, epoch_end=lambda _e: scheduler.step(),
        optimizer=optimizer)


def main(argv=None):
    args, cfg = parse_args(argv)
    features.check_settings(cfg)
    dist = distributed.setup(args.device, args.local_rank, args.amp, args.channels_last)
    data = load_data(cfg, args).to(dist.device)
    check_budget(cfg.START, cfg.ADDENDUM, cfg.CYCLES, len(data.train_idx))
    initial = features.initial_chooser(cfg, data, dist, args.data_root)  # START at random, or --init-strategy
    strategy = get_strategy(SAMPLING[cfg.SAMPLING])
    if cfg.PRETRAINED:  # missing or unreadable ImageNet weights stop the run before it writes anything
        model_from_config(cfg, data, pretrained=True)
    run = start_run(args, cfg, data, dist, ("LL4AL", data.name, cfg.SAMPLING, cfg.AUXILIARY),
                    f"{data.name} auxiliary:{cfg.AUXILIARY} sampling:{cfg.SAMPLING}", cfg.CYCLES)

    for trial in range(cfg.TRIALS):
        seed_everything(cfg.SEED + trial)
        model = model_from_config(cfg, data, consistency_head=False, pretrained=True).to(dist.device)
        module = build_model("lossnet", None, stage_channels=model.stage_channels).to(dist.device)  # always trained
        labeled_idx = initial(data.train_idx, cfg.START, trial)
        saved = run.restore(trial)
        if saved:
            model.load_state_dict(saved["model"])
            module.load_state_dict(saved["loss_module"])
            labeled_idx = saved["labeled_idx"].numpy()

        for cycle in run.cycles_left(trial):
            times = {}
            pool_idx = np.setdiff1d(data.train_idx, labeled_idx)
            with run.timer(times, "train_seconds"):
                train_cycle(model, module, data, labeled_idx, cfg, args, dist, run, f"trial{trial}/cycle{cycle}")
            acc = evaluate(model, data, cfg.BATCH, dist, data.workers)
            with run.timer(times, "query_seconds"):
                candidates = random_subset(pool_idx, min(cfg.SUBSET, len(pool_idx)))
                ctx = QueryContext(model, data, labeled_idx, candidates, cfg.ADDENDUM, dist, cfg.BATCH,
                                   data.workers, extras={"loss_module": module}, settings=cfg,
                                   cycle=cycle)
                queried = strategy.select(ctx)
            if cfg.SAVE_MODEL:
                run.save_model(trial, cycle, model)
                run.save_model(trial, cycle, module, "loss_module")
            labeled_idx = run.commit(trial, cycle, labeled_idx, queried, acc, times,
                                     {"model": model.state_dict(), "loss_module": module.state_dict()})
    run.close()
    distributed.cleanup(dist)


if __name__ == "__main__":
    run_cli(main)
