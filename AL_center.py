"""LfOSA's baselines (Ning et al., "Active Learning for Open-set Annotation", CVPR'22; spec 004 B.6):
one K-way classifier, trained on the labeled known images and used for querying.

Per trial:

    K known classes (0..K-1); L <- init-percent of the known training images; I <- {}
    U <- the other known images + every unknown image
    for cycle q = 0 .. max-query-1:
        f <- a fresh ResNet-18 with a 2-d bottleneck and K outputs, trained on L for max-epoch epochs:
             CE + weight-cent * center loss; SGD 0.01, momentum 0.9, wd 5e-4, StepLR(20, 0.5)
        test f on the known-class test set
        Q <- query-batch samples of U chosen by --query-strategy with f
             (random, uncertainty, AV_based, AV_uncertainty, Max_AV, KMeans, BALD, ...)
        the oracle: L <- L + known(Q), I <- I + unknown(Q), U <- U - Q
        record precision |known(Q)| / |Q| and recall |L| / all known training images

    python AL_center.py --gpu 0 --save-dir log_AL/ --weight-cent 0 --query-strategy uncertainty --init-percent 8 \\
        --known-class 20 --query-batch 1500 --seed 1 --model resnet18 --dataset cifar100
"""

from utils.core.cli import run_cli
from utils.protocols.lfosa import Experiment, Member, cross_entropy, parse_args


def main(argv=None):
    exp = Experiment(*parse_args(argv, "AL_center.py"))
    K = exp.K
    for trial in range(exp.trials):
        sets = exp.start_trial(trial)
        for cycle in exp.cycles(trial):
            times = {}
            f = exp.new_model(K, queries=True)
            with exp.run.timer(times, "train_seconds"):
                exp.train([Member("f", f, sets.labeled, cross_entropy)], exp.center_loss(),
                          f"trial{trial}/cycle{cycle}")
            acc = exp.test(f)
            with exp.run.timer(times, "query_seconds"):
                queried = exp.query(f, sets)
            sets = exp.commit(trial, cycle, sets, queried, acc, times, {"": f})
    exp.close()


if __name__ == "__main__":
    run_cli(main)
