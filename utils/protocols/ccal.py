"""What CCAL's two entry scripts share (Du et al., ICCV'21; spec 002 part A), and its joint query.

* the seed's flags (argument.py is shared by contrast_main.py and active_main.py, A.1) and their
  resolution against ``config/ccal.py``;
* the class-distribution-mismatch pool (A.2), the same for both scripts;
* the encoder checkpoints contrast_main.py writes and active_main.py reads;
* the joint query (A.6): query-time features of the two encoders, then pure functions from
  features to scores to the queried positions (chunked over the pool: no pool x pool matrix);
* batches that split evenly over ranks (the contrastive steps and the classifier's).
"""

import argparse
import os

import numpy as np
import torch
import torch.nn.functional as F

from config import load_config
from models.csi import CSIResNet
from utils.core import distributed
from utils.core.cli import UserError, parse_overrides
from utils.core.data import make_batch_loader
from utils.core.openset import CCAL_KNOWN, mismatch_pool
from utils.core.results import atomic_write
from utils.methods.contrastive import SimCLRAugment, hflip, rotate

CONTRAST, ACTIVE = "contrast_main.py", "active_main.py"
MODES = {"senmatic": "senmatic", "semantic": "senmatic", "feature": "feature", "distinctive": "feature"}
SHIFT_OF_MODE = {"senmatic": "none", "feature": "rotation"}
ROLE = {"senmatic": "semantic", "feature": "distinctive"}


# ----------------------------------------------------------------------------- command line

def add_ccal_args(parser, script):
    """The seed's argument.py flags (A.1.1) and ours (--known-classes, --initial-budget); flags the
    other script uses, or that change nothing, are accepted without help text."""
    group = parser.add_argument_group(f"{script} (the seed's flags)")
    contrast = script == CONTRAST

    def add(*names, used=True, help=None, **kw):
        group.add_argument(*names, help=help if used else argparse.SUPPRESS, **kw)

    def unused(*names, **kw):
        add(*names, used=False, **kw)

    add("--model", default="resnet18", help="encoder backbone: resnet18 (CSI's CIFAR ResNet-18)")
    add("--mode", default=None, help="senmatic (semantic, SimCLR) or feature (distinctive, CSI)" if contrast
        else "eval (the only mode of the query)")
    add("--shift_trans_type", choices=["rotation", "none"], default=None,
        help="none with --mode senmatic, rotation with --mode feature" if contrast
        else "accepted; the query always uses the 4 rotations, as the seed forces")
    add("--mismatch", type=float, default=None, help="fraction of unknown-class images in the unlabeled pool (0.8)")
    add("--known-classes", default=None, help="comma-separated known classes (default: CCAL's list for cifar10 "
        "and cifar100; required for other datasets)")
    add("--initial-budget", type=int, default=None, help="initial known labels (800 on CIFAR; otherwise 8%% of the "
        "known training images)")
    # contrast_main.py
    add("--logdir", default=None, used=contrast, help="checkpoint folder (created; default ./model/semantic or "
        "./model/distinctive; --out is the same)")
    add("--resume_path", default=None, used=contrast, help="continue the training saved in this folder (--resume: "
        "in --logdir)")
    add("--no_strict", action="store_true", used=contrast, help="non-strict weight loading on --resume_path")
    add("--save_step", type=int, default=None, used=contrast, help="checkpoint every N epochs (10)")
    add("--epoch", dest="epochs", type=int, default=None, used=False)  # the seed's README spelling of --epochs
    add("--batch_size", type=int, default=None, used=contrast, help="images per process and step (128)")
    add("--optimizer", choices=["sgd", "adam", "lars"], default=None, used=contrast, help="sgd (default) or adam")
    add("--lr_scheduler", choices=["cosine", "step_decay"], default=None, used=contrast)
    add("--warmup", type=int, default=None, used=contrast, help="warm-up epochs (10; lr x10 over them)")
    add("--lr_init", type=float, default=None, used=contrast, help="initial learning rate (0.1)")
    add("--weight_decay", type=float, default=None, used=contrast, help="weight decay (1e-6)")
    add("--temperature", type=float, default=None, used=contrast, help="NT-Xent temperature (0.5)")
    add("--simclr_dim", type=int, default=None, used=contrast, help="projection dimension (128)")
    add("--sim_lambda", type=float, default=None, used=contrast, help="weight of the contrastive loss (1.0)")
    # active_main.py
    add("--load_feature_path", default="./model/distinctive/last.model", used=not contrast,
        help="the distinctive encoder (contrast_main.py --mode feature)")
    add("--load_senmatic_path", default="./model/semantic/last.model", used=not contrast,
        help="the semantic encoder (contrast_main.py --mode senmatic)")
    add("--target", type=int, default=None, used=not contrast, help="samples queried per known class and cycle "
        "(1500)")
    add("--split", type=int, default=None, used=not contrast, help="query cycles (5)")
    add("--k", type=float, default=None, used=not contrast, help="steepness of the semantic squashing (100)")
    add("--t", type=float, default=None, used=not contrast, help="threshold of the semantic squashing (0.9)")
    add("--ood_samples", type=int, default=None, used=not contrast, help="augmented copies per image at query "
        "time (10)")
    add("--test_batch_size", type=int, default=None, used=not contrast, help="images per scoring batch (100)")
    add("--print_score", action="store_true", used=not contrast,
        help="log, every query, how many pool images each known class pseudo-labels")
    add("--resize_factor", type=float, default=None, help="crop scale: lower bound in training (0.08), fixed at "
        "query time (0.54)")
    add("--resize_fix", action="store_true", help="fix the crop scale to --resize_factor (always so at query time)")
    for flag in ("--one_class_idx", "--suffix", "--error_step", "--ood_dataset", "--ood_score", "--ood_layer",
                 "--ood_batch_size", "--load_path"):
        unused(flag, nargs="*", default=None)  # change nothing here (A.1.1); --load_path: no feature dumps
    unused("--save_score", action="store_true")


def resolve(args, script):
    """Check the flags and fill every unset one from config/ccal.py (``--set`` applied); returns
    the config. Raises UserError on bad input, before anything is written."""
    cfg = load_config("ccal", parse_overrides(args.overrides))
    contrast = script == CONTRAST
    defaults = {"mismatch": "MISMATCH", "save_step": "SAVE_STEP", "batch_size": "BATCH_SIZE",
                "optimizer": "OPTIMIZER", "lr_scheduler": "LR_SCHEDULER", "warmup": "WARMUP", "lr_init": "LR_INIT",
                "weight_decay": "WEIGHT_DECAY", "temperature": "TEMPERATURE", "simclr_dim": "SIMCLR_DIM",
                "sim_lambda": "SIM_LAMBDA", "target": "TARGET", "split": "SPLIT", "k": "K", "t": "T",
                "ood_samples": "QUERY_OOD_SAMPLES", "test_batch_size": "TEST_BATCH_SIZE",
                "epochs": "EPOCHS" if contrast else "CLASSIFIER_EPOCHS",
                "resize_factor": "RESIZE_FACTOR" if contrast else "QUERY_RESIZE_FACTOR"}
    for flag, key in defaults.items():
        if getattr(args, flag) is None:
            setattr(args, flag, cfg[key])
    args.dataset = args.dataset or "cifar10"
    if args.model != "resnet18":
        raise UserError(f"--model {args.model} is not supported; use --model resnet18 (CCAL's runs)")
    if contrast:
        mode = MODES.get(str(args.mode).lower())
        if mode is None:
            raise UserError("--mode must be senmatic (semantic encoder) or feature (distinctive encoder)")
        args.mode = mode
        args.shift_trans_type = args.shift_trans_type or SHIFT_OF_MODE[mode]
        if args.shift_trans_type != SHIFT_OF_MODE[mode]:
            raise UserError(f"--mode {mode} trains with --shift_trans_type {SHIFT_OF_MODE[mode]}, not "
                            f"{args.shift_trans_type}")
        if args.optimizer == "lars":
            raise UserError("--optimizer lars is not available (the seed raises too); use --optimizer sgd")
        args.logdir = args.logdir or args.out or f"./model/{ROLE[mode]}"
        args.resume_path = args.resume_path or (args.logdir if args.resume else None)  # --resume: continue --logdir
        if args.out and os.path.abspath(args.out) != os.path.abspath(args.logdir):
            raise UserError("--out and --logdir name different folders; give one of them")
    else:
        args.mode = args.mode or "eval"
        if args.mode != "eval":
            raise UserError(f"--mode {args.mode}: active_main.py only runs --mode eval (the query)")
    positive = ["epochs", "batch_size", "save_step", "target", "split", "ood_samples", "test_batch_size"]
    for flag in positive:
        if getattr(args, flag) < 1:
            raise UserError(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if not 0 < args.resize_factor <= 1:
        raise UserError(f"--resize_factor must be in (0, 1], got {args.resize_factor}")
    if args.temperature <= 0:
        raise UserError(f"--temperature must be positive, got {args.temperature}")
    return cfg


def make_augment(cfg, resize_factor, fixed):
    return SimCLRAugment(cfg["JITTER"], cfg["GRAY_P"], (resize_factor, 1.0), cfg["CROP_RATIO"], fixed)


# ----------------------------------------------------------------------------- the pool (A.2)

def known_classes(args, data):
    """CCAL's known classes of ``data`` (A.1: cifar10, cifar100) or ``--known-classes``."""
    if args.known_classes is None:
        if data.name not in CCAL_KNOWN:
            raise UserError(f"{data.name} has no CCAL known-class list; pass --known-classes, e.g. --known-classes 0,1")
        return np.asarray(CCAL_KNOWN[data.name])
    try:
        classes = [int(c) for c in str(args.known_classes).split(",") if c.strip()]
    except ValueError:
        raise UserError(f"--known-classes expects comma-separated class numbers, got {args.known_classes!r}") from None
    if not classes or len(set(classes)) != len(classes) or not all(0 <= c < data.num_classes for c in classes) \
            or len(classes) >= data.num_classes:
        raise UserError(f"--known-classes needs distinct classes in 0..{data.num_classes - 1} and at least one "
                        f"unknown class, got {args.known_classes!r}")
    return np.asarray(classes)


def ccal_pool(args, cfg, data):
    """The mismatch pool (A.2): ``--initial-budget`` random known labels L0 (seed POOL_SEED, as the
    seed's seed 0), the other known images U_in and ceil(m |U_in| / (1 - m)) unknown images U_out.
    The contrastive training set is L0 + U_in + U_out (``contrast_set``)."""
    classes = known_classes(args, data)
    targets = data.train_targets
    n_known = int(np.isin(targets[data.train_idx], classes).sum())
    if args.initial_budget is None:
        args.initial_budget = cfg["INITIAL_BUDGET"] if data.name in CCAL_KNOWN else \
            max(2 * len(classes), round(cfg["INITIAL_FRACTION"] * n_known))
    if not 1 <= args.initial_budget < n_known:
        raise UserError(f"--initial-budget {args.initial_budget} must be between 1 and the {n_known} known-class "
                        "training images minus one; lower --initial-budget")
    pool = mismatch_pool(targets, classes, args.mismatch, args.initial_budget, cfg["POOL_SEED"], data.train_idx)
    counts = np.bincount(pool.label_map(data.num_classes)[targets[pool.labeled_idx]], minlength=len(classes))
    if counts[: len(classes)].min() < 2:
        raise UserError(f"the {args.initial_budget} initial labels hold fewer than 2 images of some known class "
                        "(the distinctive score needs 2 per class); raise --initial-budget")
    return pool


def contrast_set(pool):
    return np.union1d(pool.labeled_idx, pool.pool_idx)


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

def save_encoder(logdir, model, optimizer, scheduler, epoch, settings):
    """``last.model`` (the encoder's weights: what active_main.py loads), ``last.optim`` (weights,
    optimizer, scheduler and epoch: everything --resume_path needs, in one file) and ``last.config``
    (the settings), each written atomically."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    atomic_write(os.path.join(logdir, "last.model"), lambda fh: torch.save(state, fh))
    resume = {"epoch": epoch, "model": state, "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    atomic_write(os.path.join(logdir, "last.optim"), lambda fh: torch.save(resume, fh))
    atomic_write(os.path.join(logdir, "last.config"), lambda fh: torch.save({**settings, "epoch": epoch}, fh))


def read_checkpoint(path, what):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(f"{what} {path} is unreadable or corrupt ({str(exc).splitlines()[0]})") from None


def load_encoder(path, mode, flag):
    """The encoder contrast_main.py saved at ``path`` with ``--mode mode``."""
    role = ROLE[mode]
    if not os.path.isfile(path):
        raise UserError(f"{flag} {path}: no {role} encoder there; train it first with contrast_main.py --mode {mode} "
                        f"--shift_trans_type {SHIFT_OF_MODE[mode]} --logdir {os.path.dirname(path) or '.'}")
    config_path = os.path.join(os.path.dirname(path), "last.config")
    if os.path.isfile(config_path):
        saved = read_checkpoint(config_path, "encoder settings").get("mode")
        if saved != mode:
            raise UserError(f"{flag} {path} holds a {ROLE.get(saved, saved)} encoder (--mode {saved}); pass the "
                            f"{role} one (--mode {mode})")
    return CSIResNet.from_state_dict(read_checkpoint(path, "encoder"), path).eval()


# ----------------------------------------------------------------------------- the joint query (A.6)

@torch.no_grad()
def query_features(distinctive, semantic, data, indices, augment, copies, seed, batch_size, dist, workers=0):
    """The seed's get_features: for every image, ``copies`` views (a random flip, the 4 rotations,
    then ``augment`` with the fixed query crop scale), fed to both encoders. Returns the distinctive
    projections averaged over the copies per rotation, [N, 4, D], and the semantic projection of
    rotation 0, [N, D] (the only one the semantic score uses). Views are seeded per copy and per
    block of ``batch_size`` images, so the features do not depend on the number of processes; every
    rank scores its blocks and all ranks get every feature."""
    indices = np.asarray(indices)
    blocks = [indices[s:s + batch_size].tolist() for s in range(0, len(indices), batch_size)]
    loader = make_batch_loader(data.train, lambda _epoch: blocks, dist, workers)
    rotations = 4
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
            rows = augment(rows, augment.sample(len(rows), generator, dist.device))
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


def min_max(x):
    """(x - min) / (max - min) over the pool (0 for a constant vector)."""
    return (x - x.min()) / (x.max() - x.min()).clamp_min(1e-12)


def nearest_anchor(queries, anchors, chunk=4096):
    """For each row of ``queries`` [N, D], its largest cosine similarity to the rows of ``anchors``
    and that anchor's position; chunked over N (memory O(chunk x |anchors|))."""
    a = F.normalize(anchors, dim=1)
    best, where = [], []
    for start in range(0, len(queries), chunk):
        sims = F.normalize(queries[start:start + chunk], dim=1) @ a.T
        value, position = sims.max(1)
        best.append(value)
        where.append(position)
    return torch.cat(best), torch.cat(where)


def semantic_scores(pool, labeled, labeled_y, k, t, chunk=4096):
    """The semantic score (A.6): S(x) = max_j cos(x, l_j) over all labeled known images, min-max
    normalised over the pool to S^, squashed to (1 - e^{-k(S^ - t)}) / (1 + e^{-k(S^ - t)}) =
    tanh(k (S^ - t) / 2); and the pseudo-label y_sem(x), the label of the nearest labeled image."""
    similarity, nearest = nearest_anchor(pool, labeled, chunk)
    return torch.tanh(k * (min_max(similarity) - t) / 2), labeled_y[nearest]


def distinctive_scores(pool, anchors, chunk=4096):
    """The distinctive score of one class (A.6): D_c(x) = 1/R sum_r [(s1 - s2) + (cos(a1, a2) + s1)],
    with s1 >= s2 the two largest cosine similarities between x's rotation-r feature and the class's
    anchors (rotation r), a1, a2 those anchors. ``pool`` [N, R, D], ``anchors`` [n_c >= 2, R, D]."""
    a = F.normalize(anchors, dim=2)
    scores = []
    for start in range(0, len(pool), chunk):
        x = F.normalize(pool[start:start + chunk], dim=2)
        total = torch.zeros(len(x))
        for r in range(x.shape[1]):
            top = (x[:, r] @ a[:, r].T).topk(2, dim=1)
            a1, a2 = a[top.indices[:, 0], r], a[top.indices[:, 1], r]
            total += 2 * top.values[:, 0] - top.values[:, 1] + (a1 * a2).sum(1)
        scores.append(total / x.shape[1])
    return torch.cat(scores)


def joint_selection(sigma, pseudo_labels, distinctive, target):
    """The joint query (A.6) over a pool of N images and C known classes: for class c,
    score_c = sigma + 1 - D^_c (D^_c = ``distinctive[:, c]``, min-max normalised), set to -1 where
    the pseudo-label is not c; the ``target`` highest positions per class (ties: the lower position
    first), classes in order, a position picked by an earlier class not repeated."""
    picks = []
    for c in range(distinctive.shape[1]):
        score = torch.where(pseudo_labels == c, sigma + 1 - distinctive[:, c], torch.full_like(sigma, -1.0))
        picks.append(torch.sort(score, descending=True, stable=True).indices[:target])
    order = torch.cat(picks).numpy()
    _, first = np.unique(order, return_index=True)
    return order[np.sort(first)]


def ccal_query(features, feature_idx, pool_idx, labeled_idx, labels, num_known, k, t, target):
    """Positions -> indices: the joint query of ``pool_idx`` (sorted) given the labeled known images
    ``labeled_idx`` with classes ``labels`` (0..K-1), from ``features`` = (distinctive [N, 4, D],
    semantic [N, D]) of the images ``feature_idx`` (sorted). Returns the queried indices and the
    number of pool images pseudo-labelled with each class."""
    if len(pool_idx) == 0:
        return np.empty(0, dtype=np.int64), [0] * num_known
    dis, sem = features
    pool_pos, labeled_pos = np.searchsorted(feature_idx, pool_idx), np.searchsorted(feature_idx, labeled_idx)
    labels = torch.as_tensor(labels)
    sigma, pseudo = semantic_scores(sem[pool_pos], sem[labeled_pos], labels, k, t)
    dis_pool = dis[pool_pos]
    distinctive = torch.stack([min_max(distinctive_scores(dis_pool, dis[labeled_pos[(labels == c).numpy()]]))
                               for c in range(num_known)], 1)
    picked = joint_selection(sigma, pseudo, distinctive, target)
    return pool_idx[picked], torch.bincount(pseudo, minlength=num_known).tolist()
