"""CCAL step 1 (Du et al., ICCV'21; spec 002 A.2-A.5): contrastive pre-training of the semantic
and the distinctive encoder, as CSI (Tack et al., NeurIPS'20). Run once per encoder; the encoders
are never retrained during active learning.

    X <- L0 + U_in + U_out (the mismatch pool, A.2: labels are never used here)
    f <- CSI's ResNet-18 (trunk h, projection g, shift head); SGD, lr 0.1 rising x10 over 10 epochs,
         then cosine, per iteration
    for epoch = 1 .. epochs, for each batch x of X (all ranks together):
        v1, v2 <- x with independent random flips
        --mode feature:  v_i <- [rot_0(v_i), rot_90(v_i), rot_180(v_i), rot_270(v_i)]   (shifted instances)
        v1, v2 <- simclr_aug(v1), simclr_aug(v2)   (colour jitter, grayscale, resized crop)
        L = NT-Xent_t(g(h(v1)), g(h(v2)))           t = 0.5, over the gathered batch of every rank
        --mode feature:  L <- L + CE(shift(h(v)), k)   (which rotation k)
        SGD step on L
        every save_step epochs and at the end: <logdir>/last.model (rank 0)

    python -m torch.distributed.launch --nproc_per_node=4 contrast_main.py --mismatch 0.8 --dataset cifar10 \\
        --model resnet18 --mode senmatic --shift_trans_type none --batch_size 32 --epoch 700 --logdir ./model/semantic
    ... --mode feature --shift_trans_type rotation ... --logdir ./model/distinctive
"""

import os

import numpy as np
import torch
from torch import nn

from models.csi import CSIResNet
from utils.core import distributed
from utils.core.cli import ArgumentParser, UserError, add_common_args, run_cli
from utils.core.data import load_data, make_batch_loader
from utils.core.train import seed_everything
from utils.methods.contrastive import contrastive_losses, training_views, warmup_schedule
from utils.protocols.ccal import (
    CONTRAST,
    add_ccal_args,
    ccal_pool,
    contrast_set,
    even_batches,
    make_augment,
    read_checkpoint,
    resolve,
    save_encoder,
)

# settings a resumed training must share with the saved one
IDENTITY = ("dataset", "known_classes", "mismatch", "initial_budget", "max_train_samples", "mode", "shift_trans_type",
            "batch_size", "world_size", "epochs", "optimizer", "lr_scheduler", "warmup", "lr_init", "weight_decay",
            "temperature", "simclr_dim", "sim_lambda", "resize_factor", "resize_fix", "seed", "width")


def parse_args(argv=None):
    parser = ArgumentParser(description="CCAL contrastive pre-training of the semantic (--mode senmatic) or the "
                                        "distinctive (--mode feature) encoder")
    add_ccal_args(parser, CONTRAST)
    add_common_args(parser)
    return parser.parse_args(argv)


def resume_state(args, settings):
    """The state saved in --resume_path (None without it), after checking it continues this run.
    Refuses to overwrite another training's checkpoint in --logdir."""
    logdir_has = os.path.isfile(os.path.join(args.logdir, "last.model"))
    if args.resume_path is None:
        if logdir_has:
            raise UserError(f"--logdir {args.logdir} already holds a trained encoder; pass --resume_path "
                            f"{args.logdir} to continue it, or choose another --logdir")
        return None
    if logdir_has and os.path.abspath(args.logdir) != os.path.abspath(args.resume_path):
        raise UserError(f"--logdir {args.logdir} holds another encoder; resume into --logdir {args.resume_path}")
    files = [os.path.join(args.resume_path, name) for name in ("last.optim", "last.config")]
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise UserError(f"--resume_path: {missing[0]} not found; pass the --logdir of an earlier contrast_main.py run")
    saved = read_checkpoint(files[1], "settings")
    changed = [k for k in IDENTITY if saved.get(k) != settings[k]]
    if changed:
        raise UserError(f"--resume_path {args.resume_path} was trained with different settings ({', '.join(changed)}); "
                        "use the same settings or start a new --logdir")
    return read_checkpoint(files[0], "resume state")


def main(argv=None):
    args = parse_args(argv)
    cfg = resolve(args, CONTRAST)
    dist = distributed.setup(args.device, args.local_rank)
    data = load_data(args, args.dataset, cfg["IMAGE_SIZE"])
    pool = ccal_pool(args, cfg, data)
    train_idx = contrast_set(pool)  # X = L0 + U_in + U_out
    k_shift = 4 if args.mode == "feature" else 1
    settings = {**{k: v for k, v in vars(args).items() if k in IDENTITY}, "known_classes": pool.known_classes.tolist(),
                "world_size": dist.world_size, "width": cfg["WIDTH"], "dataset": data.name}
    saved = resume_state(args, settings)
    loader = make_batch_loader(data.train, even_batches(train_idx, args.batch_size, dist.world_size, args.seed,
                                                        args.batch_size), dist, args.workers)
    steps = len(loader)
    if steps == 0:
        raise UserError(f"--batch_size {args.batch_size} x {dist.world_size} process(es) exceeds the {len(train_idx)} "
                        "training images; lower --batch_size")

    seed_everything(args.seed)
    model = CSIResNet(data.in_channels, cfg["WIDTH"], args.simclr_dim, k_shift).to(dist.device)
    if dist.enabled and dist.device.type == "cuda":  # SyncBatchNorm runs on GPUs only
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net = distributed.wrap(model, dist)
    peak = args.lr_init * cfg["WARMUP_MULTIPLIER"]
    if args.optimizer == "sgd":
        optimizer = torch.optim.SGD(net.parameters(), lr=peak, momentum=cfg["MOMENTUM"], weight_decay=args.weight_decay)
    else:
        optimizer = torch.optim.Adam(net.parameters(), lr=peak, weight_decay=args.weight_decay)
    scheduler = warmup_schedule(optimizer, args.epochs, steps, args.warmup, cfg["WARMUP_MULTIPLIER"], args.lr_scheduler)
    first_epoch = 0
    if saved:
        model.load_state_dict(saved["model"], strict=not args.no_strict)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        first_epoch = saved["epoch"]
    augment = make_augment(cfg, args.resize_factor, args.resize_fix)
    generator = torch.Generator(dist.device)
    log = print if dist.is_main else (lambda *_a, **_k: None)
    log(f"{args.mode} encoder on {data.name}: {len(train_idx)} images (mismatch {args.mismatch}), "
        f"{dist.world_size} process(es) on {dist.device}, {steps} steps/epoch; checkpoints in {args.logdir}"
        + (f"; resuming after epoch {first_epoch}" if saved else ""), flush=True)
    writer = None

    for epoch in range(first_epoch, args.epochs):
        loader.batch_sampler.set_epoch(epoch)
        generator.manual_seed(int(np.random.SeedSequence([args.seed, epoch, dist.rank]).generate_state(1)[0]))
        net.train()
        totals = torch.zeros(2, device=dist.device)
        for images, _targets, _indices in loader:
            rows, shift_labels = training_views(images.to(dist.device).float().div_(255), augment, generator, k_shift)
            loss_sim, loss_shift = contrastive_losses(net(rows), shift_labels, args.temperature, args.sim_lambda)
            optimizer.zero_grad(set_to_none=True)
            (loss_sim + loss_shift).backward()
            optimizer.step()
            scheduler.step()
            totals += torch.stack([loss_sim.detach(), loss_shift.detach()])
        loss_sim, loss_shift = (totals / steps).tolist()
        done = epoch + 1
        if dist.is_main:
            print(f"[epoch {done}/{args.epochs}] loss_sim {loss_sim:.4f} loss_shift {loss_shift:.4f} "
                  f"lr {optimizer.param_groups[0]['lr']:.5f}", flush=True)
            if writer is None:
                from tensorboardX import SummaryWriter

                writer = SummaryWriter(os.path.join(args.logdir, "tb"))
            for tag, value in (("loss_sim", loss_sim), ("loss_shift", loss_shift),
                               ("lr", optimizer.param_groups[0]["lr"])):
                writer.add_scalar(f"train/{tag}", value, done)
            if done % args.save_step == 0 or done == args.epochs:
                save_encoder(args.logdir, model, optimizer, scheduler, done, settings)
        distributed.barrier(dist)
    if writer is not None:
        writer.close()
    distributed.cleanup(dist)


if __name__ == "__main__":
    run_cli(main)
