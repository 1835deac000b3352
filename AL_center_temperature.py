"""LfOSA (Ning et al., "Active Learning for Open-set Annotation", CVPR'22; spec 004 B.4-B.5): a detector
A that also learns the queried unknowns as class K, with temperature-scaled logits, chooses the queries
by the max activation value; a classifier B is trained on the known labels and reported.

Per trial:

    K known classes (0..K-1); L <- init-percent of the known training images; I <- {} (queried unknowns)
    U <- the other known images + every unknown image
    for cycle q = 0 .. max-query-1:
        A <- a fresh ResNet-18 (2-d bottleneck) with K+1 outputs, B <- one with K outputs; for max-epoch
        epochs: one epoch of A on L + I (I labelled K), then one of B on L (SGD 0.01, momentum 0.9,
        wd 5e-4, StepLR(20, 0.5) each; + weight-cent * a center loss shared by A and B)
            loss_A = CE(logits / T_i, y_i), T_i = unknown-T for y_i = K, known-T otherwise
            loss_B = CE(logits, y)              (--modelB-T only names the run folder, as the seed)
        test B on the known-class test set
        MAV(x) = max_j A_j(x); per class c predicted by A (c < K): a 2-component GMM on the MAVs,
        w(x) = posterior of the higher-mean component; w(x) = 0 when A predicts K
        Q <- the query-batch samples of U with the highest w            (--query-strategy AV_temperature)
        the oracle: L <- L + known(Q), I <- I + unknown(Q), U <- U - Q
        record precision |known(Q)| / |Q| and recall |L| / all known training images

    python AL_center_temperature.py --gpu 0 --save-dir log_AL/ --weight-cent 0 --query-strategy AV_temperature \\
        --init-percent 8 --known-class 20 --query-batch 1500 --seed 1 --model resnet18 --known-T 0.5 \\
        --unknown-T 0.5 --modelB-T 1 --dataset cifar100
"""

import numpy as np

from utils.core.cli import run_cli
from utils.protocols.lfosa import Experiment, Member, cross_entropy, parse_args, temperature_cross_entropy


def main(argv=None):
    args, cfg = parse_args(argv, "AL_center_temperature.py")
    exp = Experiment(args, cfg)
    K = exp.K
    for trial in range(exp.trials):
        sets = exp.start_trial(trial)
        for cycle in exp.cycles(trial):
            times = {}
            A, B = exp.new_model(K + 1, queries=True), exp.new_model(K)
            with exp.run.timer(times, "train_seconds"):
                exp.train([Member("A", A, np.concatenate([sets.labeled, sets.invalid]),
                                  temperature_cross_entropy(cfg.KNOWN_T, cfg.UNKNOWN_T, K)),
                           Member("B", B, sets.labeled, cross_entropy)], exp.center_loss(),
                          f"trial{trial}/cycle{cycle}")
            acc = exp.test(B)
            exp.run.log(f"  detector A: {exp.test(A).acc:.2f}% of the known test images classified correctly")
            with exp.run.timer(times, "query_seconds"):
                queried = exp.query(A, sets, extras={"unknown_class": K})
            sets = exp.commit(trial, cycle, sets, queried, acc, times, {"A": A, "B": B})
    exp.close()


if __name__ == "__main__":
    run_cli(main)
