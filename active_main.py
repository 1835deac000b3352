"""CCAL step 2 (Du et al., ICCV'21; spec 002 A.2, A.6, A.7): the joint query with the two fixed
encoders of contrast_main.py, and the classifier of every cycle.

Per trial:

    L <- L0 (800 random known labels, A.2); U <- U_in + U_out (known and unknown images)
    f_sem, f_dis <- the semantic and the distinctive encoder (never retrained)
    features of every image of L + U: 10 augmented copies of its 4 rotations through both encoders
    for cycle c = 0 .. split:
        for init seed s = 0 .. 4: a fresh ImageNet-style ResNet-18 trained on L (known classes only;
            Adam 5e-4, batch 32, 100 epochs, flips), tested on the known-class test set
        test_acc <- the mean over the init seeds
        if c < split:
            semantic:    S(x) = max_l cos(f_sem(x), f_sem(l)) over L; y_sem(x) = the label of that l
                         sigma(x) = tanh(k (minmax S(x) - t) / 2)                      (k = 100, t = 0.9)
            distinctive, per known class j with anchors L_j and rotations r:
                         D_j(x) = mean_r [2 s1 - s2 + cos(a1, a2)]   (s1, s2: the two nearest anchors a1, a2)
            score_j(x) = sigma(x) + 1 - minmax D_j(x), or -1 unless y_sem(x) = j
            Q <- the top `target` of U by score_j, for every known class j
            the oracle: L <- L + known(Q); unknown(Q) are discarded; U <- U - Q
            precision = |known(Q)| / |Q|; recall = |L| / all known training images

    python active_main.py --mode eval --k 100.0 --t 0.9 --dataset cifar10 --model resnet18 --mismatch 0.8 \\
        --target 1500 --shift_trans_type rotation --ood_samples 10 --resize_factor 0.54 --resize_fix \\
        --load_feature_path ./model/distinctive/last.model --load_senmatic_path ./model/semantic/last.model
"""


import numpy as np
import torch
from torch import nn

import config
from config.ccal import ACTIVE
from models import build_model
from utils.core import distributed
from utils.core.cli import parse_script_args, run_cli
from utils.core.data import IMAGENET_MEAN, IMAGENET_STD, BatchTransform, load_data, make_batch_loader
from utils.core.loop import start_run
from utils.core.openset import known_class_view, split_query
from utils.core.results import CYCLE_COLUMNS, OPENSET_COLUMNS, file_sha256
from utils.core.rng import seed_everything
from utils.core.train import EvalScores, evaluate, fit
from utils.protocols import ccal
from utils.samplers import QueryContext, get_strategy
from utils.samplers.ccal import feature_rows, pseudo_label_counts
from utils.samplers.registry import Need


def parse_args(argv=None):
    """(run-control args, frozen settings) of config/ccal.py's active_main.py tree."""
    return parse_script_args(config.tree(ACTIVE), "CCAL joint query and per-cycle classifier (needs the two "
                             "encoders of contrast_main.py)", argv, lambda parser: ccal.add_ccal_args(parser, ACTIVE),
                             refuse=ccal.refuse_mode)


def known_class_data(data, pool):
    """The classifier's view (A.7): known classes relabelled 0..K-1, the known-class test images,
    flips only and ImageNet normalisation (a dataset's own for images without 3 channels)."""
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if data.in_channels == 3 else \
        (data.eval_transform.mean.flatten().tolist(), data.eval_transform.std.flatten().tolist())
    return known_class_view(data, pool, train_transform=BatchTransform(mean, std, flip=True),
                            eval_transform=BatchTransform(mean, std))


def train_classifier(data, labeled_idx, seed, cfg, args, dist, run, desc):
    """A.7: a fresh ImageNet-style ResNet-18 (no pretrained weights), Adam CLASSIFIER_LR, batches of
    CLASSIFIER_BATCH (none smaller than 2), CLASSIFIER_EPOCHS epochs in train mode (with
    CLASSIFIER_FROZEN_BN, as the seed, only the first: the others in eval mode); returns its
    final-epoch test accuracies (EvalScores, %) and the classifier."""
    seed_everything(seed)
    model = build_model("imagenet_resnet18", data.num_classes, data.in_channels, consistency_head=False)
    model = model.to(dist.device)
    net = distributed.wrap(model, dist)
    optimizer = torch.optim.Adam(net.parameters(), lr=cfg.CLASSIFIER_LR)
    batches = ccal.even_batches(labeled_idx, cfg.CLASSIFIER_BATCH, dist.world_size, seed, 2)
    loader = make_batch_loader(data.train, batches, dist, data.workers)

    def step(batch):
        loss = nn.functional.cross_entropy(net(data.train_transform(batch.images.to(dist.device))).logits,
                                           batch.targets.to(dist.device))
        optimizer.zero_grad(set_to_none=True)
        dist.precision.minimize(loss, optimizer)
        return loss.detach()

    fit(loader, cfg.CLASSIFIER_EPOCHS, step, run, desc, optimizer=optimizer,
        epoch_start=lambda epoch: net.train(epoch == 0 or not cfg.CLASSIFIER_FROZEN_BN))
    return evaluate(model, data, cfg.TEST_BATCH_SIZE, dist, data.workers), model


def main(argv=None):
    args, cfg = parse_args(argv)
    cycles = cfg.CYCLES or cfg.SPLIT + 1  # the last cycle trains and tests on L after the last query
    dist = distributed.setup(args.device, args.local_rank, args.amp, args.channels_last)
    data = load_data(cfg, args)
    pool = ccal.ccal_pool(cfg, data)
    targets = data.train_targets  # the original classes: the oracle
    label_of = pool.label_map(data.num_classes)
    distinctive = ccal.load_encoder(args.load_feature_path, "feature", "--load_feature_path", cfg, data,
                                    pool).to(dist.device)
    semantic = ccal.load_encoder(args.load_senmatic_path, "senmatic", "--load_senmatic_path", cfg, data,
                                 pool).to(dist.device)
    classifier_data = known_class_data(data, pool).to(dist.device)
    num_known = classifier_data.num_classes
    feature_idx = ccal.contrast_set(pool)  # L0 + U_in + U_out, the images the encoders were trained on
    rows = feature_rows(feature_idx, len(data.train))
    augment = ccal.make_augment(cfg, cfg.QUERY_RESIZE_FACTOR, fixed=True)
    strategy = get_strategy("CCAL", {Need.CCAL_FEATURES}, where="active_main.py")
    derived = {"known_classes": pool.known_classes.tolist(), "num_known": pool.num_known,
               "initial_budget": len(pool.labeled_idx),
               "encoder_sha256": [file_sha256(args.load_feature_path), file_sha256(args.load_senmatic_path)]}
    run = start_run(args, cfg, classifier_data, dist, ("CCAL", data.name, f"mismatch{cfg.MISMATCH}",
                                                       f"target{cfg.TARGET}"),
                    f"CCAL {data.name} mismatch:{cfg.MISMATCH} target:{cfg.TARGET}", cycles,
                    columns=CYCLE_COLUMNS + OPENSET_COLUMNS, derived=derived)

    for trial in range(cfg.TRIALS):
        base_seed = cfg.SEED + trial
        labeled_idx, unknown_idx = pool.labeled_idx, np.empty(0, dtype=np.int64)  # L (known), discarded unknowns
        saved = run.restore(trial)
        if saved:
            labeled_idx, unknown_idx = saved["labeled_idx"].numpy(), saved["unknown_idx"].numpy()
        features = None

        for cycle in run.cycles_left(trial):
            times = {}
            with run.timer(times, "train_seconds"):
                accs = []
                for s in range(cfg.CLASSIFIER_SEEDS):
                    acc, classifier = train_classifier(classifier_data, labeled_idx, 1000 * base_seed + s, cfg, args,
                                                       dist, run, f"trial{trial}/cycle{cycle}/seed{s}")
                    accs.append(acc)
                    if cfg.SAVE_MODEL:
                        run.save_model(trial, cycle, classifier, f"seed{s}")
            acc = EvalScores.mean(accs)
            values = [a.acc for a in accs]
            run.log(f"cycle {cycle}: test accuracy over {len(accs)} init seed(s): {acc.acc:.2f} +- "
                    f"{np.std(values, ddof=1) if len(accs) > 1 else 0.0:.2f} ({', '.join(f'{a:.2f}' for a in values)})")
            queried = np.empty(0, dtype=np.int64)
            with run.timer(times, "query_seconds"):
                if cycle < cfg.SPLIT:
                    if features is None:  # the encoders are fixed: every image's features once per trial
                        features = ccal.query_features(distinctive, semantic, data, feature_idx, augment,
                                                       cfg.QUERY_OOD_SAMPLES, base_seed, cfg.TEST_BATCH_SIZE, dist,
                                                       data.workers, rotations=cfg.QUERY_ROTATIONS)
                    unlabeled_idx = np.setdiff1d(feature_idx, np.union1d(labeled_idx, unknown_idx))
                    labels = label_of[targets[labeled_idx]]
                    extras = {"features": features, "positions": rows, "labels": labels, "k": cfg.K, "t": cfg.T,
                              "target": cfg.TARGET}
                    ctx = QueryContext(None, classifier_data, labeled_idx, unlabeled_idx,
                                       min(cfg.TARGET * num_known, len(unlabeled_idx)), dist, cfg.TEST_BATCH_SIZE,
                                       data.workers, rng=np.random.default_rng(base_seed), extras=extras)
                    queried = strategy.select(ctx)
                    if args.print_score:
                        counts = pseudo_label_counts(features, rows[unlabeled_idx], rows[labeled_idx], labels,
                                                     num_known)
                        run.log(f"cycle {cycle}: pool images pseudo-labelled per known class {counts}")
            known, unknown, extra = split_query(pool, targets, queried, len(labeled_idx))
            if not len(queried):
                extra["precision"] = float("nan")  # no query after the last cycle
            run.log(f"cycle {cycle}: queried {len(queried)}, known {len(known)}, unknown {len(unknown)}")
            unknown_idx = np.concatenate([unknown_idx, unknown])
            labeled_idx = run.commit(trial, cycle, labeled_idx, known, acc, times,
                                     {"unknown_idx": torch.as_tensor(unknown_idx)}, extra)
    run.close()
    distributed.cleanup(dist)


if __name__ == "__main__":
    run_cli(main)
