"""What CCAL's two entry scripts share (Du et al., ICCV'21; spec 002 part A). Their settings are
the trees of config/ccal.py; the joint query is the selector ``CCAL`` of utils/samplers/ccal.py.

* the seed's flags that are no settings (paths, logging) and those that change nothing here
  (argument.py is shared by contrast_main.py and active_main.py, A.1.1): :func:`add_ccal_args`;
* the class-distribution-mismatch pool (A.2), the same for both scripts: :func:`ccal_pool`;
* the views' augmentation (A.4, A.6): :func:`make_augment`;
* the encoder checkpoints contrast_main.py writes and active_main.py reads;
* the query-time features of the two encoders (A.6), once per trial: :func:`query_features`;
* batches that split evenly over ranks (the contrastive steps and the classifier's).
"""

import os

import numpy as np
import torch

from config.ccal import CONTRAST, ROLE, SHIFT_OF_MODE
from models import build_model
from utils.core import distributed
from utils.core.cli import add_inert_flags, add_refused_flags, path
from utils.core.data import make_batch_loader
from utils.core.errors import UserError
from utils.core.openset import CCAL_KNOWN, mismatch_pool
from utils.core.results import atomic_write, load_tensors
from utils.core.splits import pool_fingerprint
from utils.methods.contrastive import SimCLRAugment, hflip, rotate

CIFAR_INITIAL_BUDGET = 800  # the seed's initial_budget (A.1.1), on cifar10 and cifar100
ENCODERS = {"resnet18": "csi_resnet18"}  # MODEL -> the encoder in the model registry
K_SHIFT = {"none": 1, "rotation": 4}  # SHIFT_TRANS_TYPE -> outputs of the shift head (1: none)

UNUSED = "unused by the seed's CCAL code too (A.1.1)"
INERT_FLAGS = {  # the seed's flags that change nothing in either script
    "--one_class_idx": "it only named the seed's log folder",
    "--suffix": "it only named the seed's log folder",
    "--error_step": UNUSED,
    "--ood_dataset": UNUSED,
    "--ood_score": UNUSED,
    "--ood_layer": UNUSED,
    "--ood_batch_size": UNUSED,
    "--save_score": UNUSED,
    "--load_path": "it named the folder of the seed's feature dumps; no features are written",
}
CONTRAST_ONLY = {  # contrast_main.py's flags, accepted by active_main.py as by the seed's shared argument.py
    "--logdir", "--resume_path", "--no_strict", "--save_step", "--batch_size", "--optimizer", "--lr_scheduler",
    "--warmup", "--lr_init", "--weight_decay", "--temperature", "--simclr_dim", "--sim_lambda",
}
ACTIVE_ONLY = {  # active_main.py's flags, accepted by contrast_main.py
    "--load_feature_path", "--load_senmatic_path", "--target", "--split", "--k", "--t", "--ood_samples",
    "--test_batch_size", "--print_score", "--cycles", "--trials", "--max-test-samples",
}


# ----------------------------------------------------------------------------- command line

def add_ccal_args(parser, script):
    """The seed's run-control flags of ``script`` (paths, logging) and the seed's flags that change
    nothing in it (a notice says why); active_main.py refuses ``--mode`` other than eval (pass
    ``refuse=refuse_mode`` to parse_command_line)."""
    group = parser.add_argument_group(f"{script} (the seed's paths and logging)")
    if script == CONTRAST:
        group.add_argument("--logdir", default=None, type=path, help="checkpoint folder (created; default "
                           "./model/semantic or ./model/distinctive; --out is the same)")
        group.add_argument("--resume_path", default=None, type=path, help="continue the training saved in this folder "
                           "(--resume: in --logdir; default: a new training)")
        group.add_argument("--no_strict", action="store_true", help="non-strict weight loading on --resume_path")
        others = {flag: "a flag of active_main.py" for flag in sorted(ACTIVE_ONLY)}
    else:
        group.add_argument("--load_feature_path", type=path, default="./model/distinctive/last.model",
                           help="the distinctive encoder (contrast_main.py --mode feature; default %(default)s)")
        group.add_argument("--load_senmatic_path", type=path, default="./model/semantic/last.model",
                           help="the semantic encoder (contrast_main.py --mode senmatic; default %(default)s)")
        group.add_argument("--print_score", action="store_true",
                           help="log, every query, how many pool images each known class pseudo-labels")
        add_refused_flags(parser, {"--mode": "active_main.py only runs --mode eval (the query; the seed's other "
                                             "modes leave the encoders random)"})
        others = {flag: "a flag of contrast_main.py" for flag in sorted(CONTRAST_ONLY)}
        others["--shift_trans_type"] = "the query always uses rotations (QUERY_ROTATIONS), as the seed forces"
        others["--resize_fix"] = "the query's crop scale is always fixed (QUERY_RESIZE_FACTOR), as the seed forces"
    add_inert_flags(parser, {**INERT_FLAGS, **others}, nargs="*")


def refuse_mode(flag, value):
    """active_main.py: ``--mode`` is refused unless it is eval."""
    return flag != "--mode" or str(value).lower() != "eval"


def make_augment(cfg, resize_factor, fixed):
    """CSI's simclr_aug (A.4) from the jitter, grayscale and crop-ratio keys; crop scale
    (``resize_factor``, 1), or exactly ``resize_factor`` when ``fixed``."""
    jitter = {"p": cfg.JITTER_P, "brightness": cfg.BRIGHTNESS, "contrast": cfg.CONTRAST,
              "saturation": cfg.SATURATION, "hue": cfg.HUE}
    return SimCLRAugment(jitter, cfg.GRAY_P, (resize_factor, 1.0), tuple(cfg.CROP_RATIO), fixed)


# ----------------------------------------------------------------------------- the pool (A.2)

def known_classes(cfg, data):
    """CCAL's known classes of ``data`` (A.1: cifar10, cifar100) or KNOWN_CLASSES."""
    if cfg.KNOWN_CLASSES is None:
        if data.name not in CCAL_KNOWN:
            raise UserError(f"{data.name} has no CCAL known-class list; pass --known-classes, e.g. --known-classes 0,1")
        return np.asarray(CCAL_KNOWN[data.name])
    classes = list(cfg.KNOWN_CLASSES)
    if not classes or len(set(classes)) != len(classes) or not all(0 <= c < data.num_classes for c in classes) \
            or len(classes) >= data.num_classes:
        raise UserError(f"--known-classes needs distinct classes in 0..{data.num_classes - 1} and at least one "
                        f"unknown class, got {','.join(map(str, classes))}")
    return np.asarray(classes)


def initial_budget(cfg, data, classes, n_known):
    """INITIAL_BUDGET, or the seed's 800 on CIFAR, or INITIAL_FRACTION of the known images (at
    least 2 per known class) on other datasets."""
    if cfg.INITIAL_BUDGET is not None:
        return cfg.INITIAL_BUDGET
    if data.name in CCAL_KNOWN:
        return CIFAR_INITIAL_BUDGET
    return max(2 * len(classes), round(cfg.INITIAL_FRACTION * n_known))


def ccal_pool(cfg, data):
    """The mismatch pool (A.2) from the settings: the initial budget of random known labels L0
    (seed POOL_SEED, as the seed's seed 0), the other known images U_in and
    ceil(MISMATCH |U_in| / (1 - MISMATCH)) unknown images U_out; ``len(pool.labeled_idx)`` is the
    initial budget. The contrastive training set is L0 + U_in + U_out (``contrast_set``)."""
    classes = known_classes(cfg, data)
    targets = data.train_targets
    n_known = int(np.isin(targets[data.train_idx], classes).sum())
    budget = initial_budget(cfg, data, classes, n_known)
    if not 1 <= budget < n_known:
        raise UserError(f"--initial-budget {budget} must be between 1 and the {n_known} known-class "
                        "training images minus one; lower --initial-budget")
    pool = mismatch_pool(targets, classes, cfg.MISMATCH, budget, cfg.POOL_SEED, data.train_idx)
    counts = np.bincount(pool.label_map(data.num_classes)[targets[pool.labeled_idx]], minlength=len(classes))
    if counts[: len(classes)].min() < 2:
        raise UserError(f"the {budget} initial labels hold fewer than 2 images of some known class "
                        "(the distinctive score needs 2 per class); raise --initial-budget")
    return pool


def contrast_set(pool):
    return np.union1d(pool.labeled_idx, pool.pool_idx)


# the settings the contrastive training set depends on; an encoder records the fingerprint of that
# set (utils.core.splits.pool_fingerprint), and active_main.py only queries with encoders of its own pool
POOL_KEYS = ("DATASET", "MAX_TRAIN_SAMPLES", "SEED", "IMAGE_SIZE", "KNOWN_CLASSES", "MISMATCH", "INITIAL_BUDGET",
             "INITIAL_FRACTION", "POOL_SEED")


def even_batches(indices, batch_size, world, seed, min_size):
    """``make_batches(epoch)`` for utils.core.data.make_batch_loader: a seeded shuffle of ``indices`` in
    global batches of ``batch_size`` x ``world``, each split into ``world`` per-rank batches, so
    every rank takes the same number of steps; a last global batch whose per-rank parts would be
    smaller than ``min_size`` is dropped."""
    indices = np.asarray(indices)

    def make_batches(epoch):
        order = np.random.default_rng([seed, epoch]).permutation(indices)
        batches = []
        for start in range(0, len(order), batch_size * world):
            parts = np.array_split(order[start:start + batch_size * world], world)
            if min(len(p) for p in parts) >= min_size:
                batches += [p.tolist() for p in parts]
        return batches

    return make_batches


# ----------------------------------------------------------------------------- encoder checkpoints

def build_encoder(cfg, in_channels, k_shift):
    """contrast_main.py's encoder: MODEL (CSI's ResNet-18) with WIDTH and SIMCLR_DIM."""
    return build_model(ENCODERS[cfg.MODEL], None, in_channels, width=cfg.WIDTH, simclr_dim=cfg.SIMCLR_DIM,
                       k_shift=k_shift)


def save_encoder(logdir, model, optimizer, scheduler, epoch, record):
    """``last.optim`` (weights, optimizer, scheduler, epoch and ``record``: everything --resume_path
    needs, in one file, written first: it is the commit point), then ``last.model`` (the encoder's
    weights: what active_main.py loads) and ``last.config`` (``record``: the mode, the settings and
    the resume identity), each written atomically; a resume rewrites the last two from the first."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    resume = {"epoch": epoch, "model": state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
              "record": {**record, "epoch": epoch}}
    atomic_write(os.path.join(logdir, "last.optim"), lambda fh: torch.save(resume, fh))
    atomic_write(os.path.join(logdir, "last.model"), lambda fh: torch.save(state, fh))
    atomic_write(os.path.join(logdir, "last.config"), lambda fh: torch.save({**record, "epoch": epoch}, fh))


def read_checkpoint(path, what):
    return load_tensors(path, what, "train it again with contrast_main.py")


def load_encoder(path, mode, flag, cfg, data, pool=None):
    """The encoder contrast_main.py saved at ``path`` with ``--mode mode``, built as MODEL with the
    shapes its weights hold (WIDTH, when set, must match), for the images of ``data``; trained on
    ``pool``'s contrastive set when given (the fingerprint its last.config records)."""
    role = ROLE[mode]
    if not os.path.isfile(path):
        raise UserError(f"{flag} {path}: no {role} encoder there; train it first with contrast_main.py --mode {mode} "
                        f"--shift_trans_type {SHIFT_OF_MODE[mode]} --logdir {os.path.dirname(path) or '.'}")
    config_path = os.path.join(os.path.dirname(path), "last.config")
    if os.path.isfile(config_path):
        record = read_checkpoint(config_path, "encoder settings")
        saved = record.get("mode")
        if saved != mode:
            raise UserError(f"{flag} {path} holds a {ROLE.get(saved, saved)} encoder (--mode {saved}); pass the "
                            f"{role} one (--mode {mode})")
        if pool is not None and record.get("pool") not in (None, pool_fingerprint(contrast_set(pool))):
            theirs = record.get("settings", {})
            changed = [f"{k} {theirs.get(k)!r} there, {cfg[k]!r} here" for k in POOL_KEYS if theirs.get(k) != cfg[k]]
            raise UserError(f"{flag} {path} was trained on another pool ({'; '.join(changed) or 'other images'}); "
                            f"query with the settings it was trained with, or train it with these")
    state = read_checkpoint(path, "encoder")
    try:
        stem = state["stem.0.weight"]
        width, channels = stem.shape[0], stem.shape[1]
        shape = {"width": width, "simclr_dim": state["simclr_layer.2.weight"].shape[0],
                 "k_shift": state["shift_cls_layer.weight"].shape[0] if "shift_cls_layer.weight" in state else 1}
    except (KeyError, AttributeError, IndexError) as exc:
        raise UserError(f"{path} is not an encoder saved by contrast_main.py ({exc}); train one with "
                        "contrast_main.py") from None
    if channels != data.in_channels:
        raise UserError(f"{flag}: the encoder takes {channels}-channel images, {data.name} has {data.in_channels}; "
                        f"train it on {data.name} with contrast_main.py")
    if cfg.WIDTH is not None and width != cfg.WIDTH:
        raise UserError(f"{flag} {path}: the encoder's first stage has {width} channels, not WIDTH={cfg.WIDTH}; "
                        f"--set WIDTH={width} (or WIDTH=None: as the file)")
    model = build_model(ENCODERS[cfg.MODEL], None, channels, **shape)
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UserError(f"{path} is not a {cfg.MODEL} encoder saved by contrast_main.py "
                        f"({str(exc).splitlines()[0]}); train one with contrast_main.py") from None
    return model.eval()



# ----------------------------------------------------------------------------- query-time features (A.6)

SEED_ROTATIONS = 4  # the seed's query always uses the 4 rotations


@torch.no_grad()
def query_features(distinctive, semantic, data, indices, augment, copies, seed, batch_size, dist, workers=0,
                   rotations=SEED_ROTATIONS):
    """The seed's get_features: for every image, ``copies`` views (a random flip, the rotations
    0..``rotations``-1, then ``augment`` with the fixed query crop scale), fed to both encoders.
    Returns the distinctive projections averaged over the copies per rotation, [N, rotations, D],
    and the semantic projection of rotation 0, [N, D] (the only one the semantic score uses).
    Views are seeded per copy and per block of ``batch_size`` images, so the features do not
    depend on the number of processes; each view's augmentation is drawn as for all 4 rotations
    (a rotation's views do not depend on ``rotations``); every rank scores its blocks and all
    ranks get every feature."""
    if not 1 <= rotations <= SEED_ROTATIONS:
        raise ValueError(f"rotations must be in 1..{SEED_ROTATIONS}, got {rotations}")
    indices = np.asarray(indices)
    blocks = [indices[s:s + batch_size].tolist() for s in range(0, len(indices), batch_size)]
    loader = make_batch_loader(data.train, lambda _epoch: blocks, dist, workers)
    dim = distinctive.simclr_layer[-1].out_features
    dis_parts, sem_parts = [torch.zeros(0, rotations, dim)], [torch.zeros(0, semantic.simclr_layer[-1].out_features)]
    for i, (images, _targets, _idx) in enumerate(loader):
        block = dist.rank + i * dist.world_size
        x = images.to(dist.device).float().div_(255)
        dis_sum, sem_sum = 0.0, 0.0
        for copy_id in range(copies):
            generator = torch.Generator().manual_seed(int(np.random.SeedSequence([seed, copy_id, block])
                                                          .generate_state(1)[0]))
            rows, _ = rotate(hflip(x, generator), rotations)
            params = augment.sample(SEED_ROTATIONS * len(x), generator, dist.device)
            rows = augment(rows, {key: value[: len(rows)] for key, value in params.items()})
            dis_sum = dis_sum + distinctive(rows).simclr.view(rotations, len(x), -1).transpose(0, 1)
            sem_sum = sem_sum + semantic(rows[: len(x)]).simclr
        dis_parts.append((dis_sum / copies).float().cpu())
        sem_parts.append((sem_sum / copies).float().cpu())
    order = np.concatenate([np.arange(len(blocks))[r::dist.world_size] for r in range(dist.world_size)])
    positions = torch.as_tensor(np.concatenate([np.arange(b * batch_size, b * batch_size + len(blocks[b]))
                                                for b in order]))
    dis, sem = torch.empty(len(indices), rotations, dim), torch.empty(len(indices), sem_parts[0].shape[1])
    dis[positions] = distributed.gather_rows(torch.cat(dis_parts), dist)
    sem[positions] = distributed.gather_rows(torch.cat(sem_parts), dist)
    return dis, sem
