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

import config
from config.ccal import CONTRAST, ROLE
from utils.core import distributed
from utils.core.cli import parse_script_args, run_cli
from utils.core.data import load_data, make_batch_loader
from utils.core.errors import UserError
from utils.core.loop import image_shape, precision_identity
from utils.core.progress import summary_writer
from utils.core.results import ResultsFolder, check_folder
from utils.core.rng import seed_everything
from utils.core.splits import pool_fingerprint
from utils.methods.contrastive import contrastive_losses, training_views, warmup_schedule
from utils.protocols import ccal


def parse_args(argv=None):
    """(run-control args, frozen settings) of config/ccal.py's contrast_main.py tree."""
    return parse_script_args(config.tree(CONTRAST), "CCAL contrastive pre-training of the semantic (--mode senmatic) "
                             "or the distinctive (--mode feature) encoder", argv,
                             lambda parser: ccal.add_ccal_args(parser, CONTRAST))


def folders(args, cfg):
    """(the checkpoint folder, the folder to resume from or None): --logdir (or --out, or
    ./model/<role>); --resume_path, or --logdir itself with --resume."""
    if cfg.MODE is None:
        raise UserError("--mode must be senmatic (semantic encoder) or feature (distinctive encoder)")
    logdir = args.logdir or args.out or f"./model/{ROLE[cfg.MODE]}"
    if args.out and os.path.abspath(args.out) != os.path.abspath(logdir):
        raise UserError("--out and --logdir name different folders; give one of them")
    check_folder(logdir, "--logdir")
    return logdir, args.resume_path or (logdir if args.resume else None)


def resume_state(logdir, resume_path, identity, log=print):
    """The state saved in ``resume_path`` (None without it), after checking it continues this run
    (the same ``identity``: the settings but the resumable ones, the known classes, the initial
    budget and the world size). Refuses to overwrite another training's checkpoint in ``logdir``;
    a folder whose first save was interrupted (no ``last.optim``) holds nothing to keep: resuming
    it starts over, and ``log`` says so."""
    logdir_has = os.path.isfile(os.path.join(logdir, "last.optim"))
    if resume_path is None:
        if logdir_has:
            raise UserError(f"--logdir {logdir} already holds a trained encoder; pass --resume_path "
                            f"{logdir} to continue it, or choose another --logdir")
        return None
    if logdir_has and os.path.abspath(logdir) != os.path.abspath(resume_path):
        raise UserError(f"--logdir {logdir} holds another encoder; resume into --logdir {resume_path}")
    path = os.path.join(resume_path, "last.optim")
    if not os.path.isfile(path) and os.path.abspath(logdir) == os.path.abspath(resume_path):
        log(f"--resume_path: {resume_path} holds no saved encoder yet (stopped before its first save); starting a "
            "fresh training in it")
        return None
    if not os.path.isfile(path):
        raise UserError(f"--resume_path: {path} not found; pass the --logdir of an earlier contrast_main.py run")
    saved = ccal.read_checkpoint(path, "resume state")
    record = saved.get("record")
    if record is None:  # written before last.optim held its record
        config = os.path.join(resume_path, "last.config")
        record = ccal.read_checkpoint(config, "settings") if os.path.isfile(config) else {}
    if record.get("identity") is None:
        raise UserError(f"--resume_path {resume_path} was written by an older contrast_main.py (no settings to "
                        "compare); start a new --logdir")
    changed = sorted(k for k in set(record["identity"]) | set(identity)
                     if record["identity"].get(k) != identity.get(k))
    if changed:
        raise UserError(f"--resume_path {resume_path} was trained with different settings ({', '.join(changed)}); "
                        "use the same settings or start a new --logdir")
    return saved


def main(argv=None):
    args, cfg = parse_args(argv)
    logdir, resume_path = folders(args, cfg)
    dist = distributed.setup(args.device, args.local_rank, args.amp, args.channels_last)
    data = load_data(cfg, args)  # no test images are used
    pool = ccal.ccal_pool(cfg, data)
    train_idx = ccal.contrast_set(pool)  # X = L0 + U_in + U_out
    k_shift = ccal.K_SHIFT[cfg.SHIFT_TRANS_TYPE]
    identity = {**cfg.identity(), "dataset": data.name, "known_classes": pool.known_classes.tolist(),
                "initial_budget": len(pool.labeled_idx), "world_size": dist.world_size, **precision_identity(dist)}
    record = {"mode": cfg.MODE, "settings": cfg.as_dict(), "identity": identity, "image_shape": image_shape(data),
              "pool": pool_fingerprint(train_idx)}
    log = print if dist.is_main else (lambda *_a, **_k: None)
    saved = resume_state(logdir, resume_path, identity, log)
    batches = ccal.even_batches(train_idx, cfg.BATCH_SIZE, dist.world_size, cfg.SEED, cfg.BATCH_SIZE)
    loader = make_batch_loader(data.train, batches, dist, data.workers)
    steps = len(loader)
    if steps == 0:
        raise UserError(f"--batch_size {cfg.BATCH_SIZE} x {dist.world_size} process(es) exceeds the {len(train_idx)} "
                        "training images; lower --batch_size")

    seed_everything(cfg.SEED)
    model = ccal.build_encoder(cfg, data.in_channels, k_shift).to(dist.device)
    if dist.enabled and dist.device.type == "cuda":  # SyncBatchNorm runs on GPUs only
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    net = distributed.wrap(model, dist)
    peak = cfg.LR_INIT * cfg.WARMUP_MULTIPLIER
    if cfg.OPTIMIZER == "sgd":
        optimizer = torch.optim.SGD(net.parameters(), lr=peak, momentum=cfg.MOMENTUM, weight_decay=cfg.WEIGHT_DECAY)
    else:
        optimizer = torch.optim.Adam(net.parameters(), lr=peak, weight_decay=cfg.WEIGHT_DECAY)
    decay = 0.1 if cfg.OPTIMIZER == "sgd" else 0.3  # CSI's step_decay factor per optimizer
    scheduler = warmup_schedule(optimizer, cfg.EPOCHS, steps, cfg.WARMUP, cfg.WARMUP_MULTIPLIER, cfg.LR_SCHEDULER,
                                decay)
    first_epoch = 0
    if dist.is_main:  # one training per folder; a killed one's temp files go
        ResultsFolder(logdir).lock()
        ResultsFolder(logdir).remove_temp_files()
    if saved:
        model.load_state_dict(saved["model"], strict=not args.no_strict)
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        first_epoch = saved["epoch"]
        if dist.is_main:  # last.model and last.config follow last.optim (a stop may have come between them)
            ccal.save_encoder(logdir, model, optimizer, scheduler, first_epoch, record)
    augment = ccal.make_augment(cfg, cfg.RESIZE_FACTOR, cfg.RESIZE_FIX)
    generator = torch.Generator(dist.device)
    log(f"{cfg.MODE} encoder on {data.name}: {len(train_idx)} images of {'x'.join(map(str, record['image_shape']))} "
        f"(mismatch {cfg.MISMATCH}), {dist.world_size} process(es) on {dist.device}, {steps} steps/epoch; checkpoints "
        f"in {logdir}" + (f"; resuming after epoch {first_epoch}" if saved else ""), flush=True)
    writer = None

    for epoch in range(first_epoch, cfg.EPOCHS):
        loader.batch_sampler.set_epoch(epoch)
        generator.manual_seed(int(np.random.SeedSequence([cfg.SEED, epoch, dist.rank]).generate_state(1)[0]))
        net.train()
        totals = torch.zeros(2, device=dist.device)
        for images, _targets, _indices in loader:
            rows, shift_labels = training_views(images.to(dist.device).float().div_(255), augment, generator, k_shift)
            loss_sim, loss_shift = contrastive_losses(net(rows), shift_labels, cfg.TEMPERATURE, cfg.SIM_LAMBDA)
            optimizer.zero_grad(set_to_none=True)
            dist.precision.minimize(loss_sim + loss_shift, optimizer)
            scheduler.step()
            totals += torch.stack([loss_sim.detach(), loss_shift.detach()])
        loss_sim, loss_shift = (totals / steps).tolist()
        done = epoch + 1
        if dist.is_main:
            print(f"[epoch {done}/{cfg.EPOCHS}] loss_sim {loss_sim:.4f} loss_shift {loss_shift:.4f} "
                  f"lr {optimizer.param_groups[0]['lr']:.5f}", flush=True)
            if writer is None:
                writer = summary_writer(os.path.join(logdir, "tb")) or False
            for tag, value in (("loss_sim", loss_sim), ("loss_shift", loss_shift),
                               ("lr", optimizer.param_groups[0]["lr"])) if writer else ():
                writer.add_scalar(f"train/{tag}", value, done)
            if done % cfg.SAVE_STEP == 0 or done == cfg.EPOCHS:
                ccal.save_encoder(logdir, model, optimizer, scheduler, done, record)
        distributed.barrier(dist)
    if writer:
        writer.close()
    distributed.cleanup(dist)


if __name__ == "__main__":
    run_cli(main)
