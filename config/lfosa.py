"""LfOSA (Ning et al., "Active Learning for Open-set Annotation", CVPR'22; spec 004 part B): the
settings of AL_center.py (``center_tree``) and AL_center_temperature.py (``temperature_tree``).

The seed's flags (B.1) set the keys named after them (``--query-batch`` -> QUERY_BATCH); the
common ``--epochs`` and ``--cycles`` set MAX_EPOCH and MAX_QUERY (``--epochs`` also scales
STEPSIZE, an epoch count; the seed's own ``--max-epoch`` does not, as the seed). The profile
applies the seed's per-dataset normalisation (B.2); the other keys are the constants the seed
hard-codes (B.2-B.4). ``--set KEY=VALUE`` changes any key; ``--list-settings`` lists them.
"""

import dataclasses

from config import common_keys, save_models_key, with_strategies
from utils.core.config import Key, Tree
from utils.core.errors import UserError
from utils.methods.features import feature_keys
from utils.samplers.registry import Need

CENTER_SCRIPT, TEMPERATURE_SCRIPT = "AL_center.py", "AL_center_temperature.py"

# what the scripts give their strategies (the temperature script also the detector's unknown class); neither runs
# the training hooks of strategies with networks of their own
SERVES = {CENTER_SCRIPT: frozenset({Need.STATE, Need.MC_DROPOUT}),
          TEMPERATURE_SCRIPT: frozenset({Need.STATE, Need.MC_DROPOUT, Need.UNKNOWN_CLASS})}
# the seed's strategy names -> the registry's (its others are registry names or aliases)
SEED_STRATEGIES = {"random": "RandomSampling", "uncertainty": "EntropySampling"}

NORMALISATION = {  # the seed's mean, std per dataset (B.2); other datasets keep their own
    "cifar10": ([0.4914, 0.4822, 0.4465], [0.2023, 0.1994, 0.2010]),
    "cifar100": ([0.5071, 0.4867, 0.4408], [0.2675, 0.2565, 0.2761]),
}


def _keys(dataset: str, strategy: str, strategies_help: str) -> dict:
    """The keys both scripts share, with ``dataset`` and ``strategy`` as the defaults."""
    keys = common_keys(dataset, seed=1, trials=1)
    keys["DATASET"] = dataclasses.replace(keys["DATASET"], flags=("--dataset", "-d"))  # the seed's -d/--dataset
    return {
        **keys,
        **feature_keys(linear=False),
        # ---------------------------------------------------------------- the seed's flags (B.1)
        "BATCH_SIZE": Key(128, "images per training, pool-scoring and test batch (per process)", minimum=1,
                          flags=("--batch-size",)),
        "LR_MODEL": Key(0.01, "SGD learning rate of the networks", above=0, flags=("--lr-model",)),
        "LR_CENT": Key(0.5, "SGD learning rate of the center-loss centers", minimum=0, flags=("--lr-cent",)),
        "WEIGHT_CENT": Key(1.0, "center-loss weight (0: off; the README runs use 0)", minimum=0,
                           flags=("--weight-cent",)),
        "MAX_EPOCH": Key(100, "training epochs per cycle; every cycle retrains fresh networks", minimum=1,
                         flags=("--max-epoch", "--epochs")),
        "MAX_QUERY": Key(10, "AL cycles (train -> test -> query)", minimum=1, flags=("--max-query", "--cycles"),
                         resumable=True),
        "QUERY_BATCH": Key(1500, "samples queried per cycle", minimum=1, flags=("--query-batch",)),
        "QUERY_STRATEGY": Key(strategy, f"the query strategy: {strategies_help} or any registered strategy "
                              "(the seed's default AV_based2 is refused: it ranks every sample alike)",
                              flags=("--query-strategy",)),
        "STEPSIZE": Key(20, "StepLR step in epochs (scaled by --epochs, not by --max-epoch)", minimum=1,
                        per_epochs="MAX_EPOCH", flags=("--stepsize",)),
        "GAMMA": Key(0.5, "StepLR factor", above=0, flags=("--gamma",)),
        "MODEL": Key("resnet18", "the 2-d-bottleneck CIFAR ResNet (models/lfosa.py)", choices=("resnet18", "resnet34"),
                     flags=("--model",)),
        "EVAL_FREQ": Key(100, "log the test accuracy every N epochs (besides the cycle's final test)", minimum=1,
                         resumable=True, flags=("--eval-freq",)),
        "KNOWN_CLASS": Key(20, "K: the classes 0..K-1 are known, every other class is unknown", minimum=1,
                           flags=("--known-class",)),
        "KNOWN_CLASSES_RANDOM": Key(False, "a random choice of the K known classes, seeded by SEED (ours)",
                                    switch=True, flags=("--known-classes-random",)),
        "INIT_PERCENT": Key(16, "percent of the known training images labeled at start (the README: 8 for "
                            "CIFAR-100 and TinyImageNet, 1 for CIFAR-10)", minimum=1, maximum=100,
                            flags=("--init-percent",)),
        # ---------------------------------------------------------------- per dataset (the profile, B.2)
        "MEAN": Key(None, "normalisation mean per channel (None: the dataset's own)", type="list[float]"),
        "STD": Key(None, "normalisation std per channel (None: the dataset's own)", type="list[float]", above=0),
        # ---------------------------------------------------------------- hard-coded in the seed (B.2-B.4)
        "MOMENTUM": Key(0.9, "SGD momentum of the networks", minimum=0, maximum=1),
        "WEIGHT_DECAY": Key(5e-4, "SGD weight decay of the networks", minimum=0),
        "WIDTH": Key(64, "channels of the first ResNet stage", minimum=1),
        "BOTTLENECK": Key(2, "width of fc1, the feature between the pooled 512-d vector and fc2 (B.3)", minimum=1),
        "ROTATION": Key(15.0, "random rotation in degrees after crop and flip (B.2); 0: off", minimum=0,
                          maximum=180),
        "MC_DROPOUT": Key(0.2, "dropout before fc1 of the querying network, only for MC-dropout strategies (BALD)",
                          minimum=0, below=1),
        "MC_SAMPLES": Key(10, "MC-dropout passes of the MC-dropout strategies", minimum=1),
    }


def center_tree() -> Tree:
    """AL_center.py: the baselines (one K-way classifier, trained and used for querying)."""
    keys = _keys("cifar10", "AV_based", "random, uncertainty, AV_based, AV_uncertainty, Max_AV, KMeans, BALD")
    keys["SAVE_MODEL"] = save_models_key("every cycle's classifier (trial<T>_cycle<C>.pt)")
    tree = Tree(CENTER_SCRIPT, keys, profile=_profile, check=_check, epochs_key="MAX_EPOCH",
                strategy_key="QUERY_STRATEGY")
    return with_strategies(tree, SERVES[CENTER_SCRIPT], runs_hooks=False, names=SEED_STRATEGIES)


def temperature_tree() -> Tree:
    """AL_center_temperature.py: LfOSA (detector A with K+1 outputs, classifier B with K)."""
    keys = _keys("cifar100", "AV_temperature",
                 "AV_temperature (LfOSA), random, uncertainty, AV_based, AV_uncertainty, Max_AV, KMeans, BALD")
    keys.update({
        "KNOWN_T": Key(0.5, "detector A: cross-entropy temperature of the known samples", above=0,
                       flags=("--known-T",)),
        "UNKNOWN_T": Key(2.0, "detector A: cross-entropy temperature of the queried unknowns (the README "
                         "uses 0.5)", above=0, flags=("--unknown-T",)),
        "SAVE_MODEL": save_models_key("every cycle's detector A and classifier B (trial<T>_cycle<C>_A.pt, "
                                      "..._B.pt)"),
        "MODELB_T": Key(1.0, "names the run folder only: model B uses no temperature, as the seed", above=0,
                        flags=("--modelB-T",)),
    })
    tree = Tree(TEMPERATURE_SCRIPT, keys, profile=_profile, check=_check, epochs_key="MAX_EPOCH",
                strategy_key="QUERY_STRATEGY")
    return with_strategies(tree, SERVES[TEMPERATURE_SCRIPT], runs_hooks=False, names=SEED_STRATEGIES)


def _profile(values: dict) -> tuple:
    """The seed's normalisation of CIFAR-10 and CIFAR-100 (B.2); nothing for other datasets."""
    dataset = str(values["DATASET"]).lower()
    if dataset not in NORMALISATION:
        return "", {}
    mean, std = NORMALISATION[dataset]
    return f"the seed's {dataset} normalisation", {"MEAN": mean, "STD": std}


def _check(cfg) -> None:
    if cfg.QUERY_STRATEGY.lower() == "av_based2":
        raise UserError("AV_based2 (the seed's default) ranks every sample alike (spec B.5); use AV_based")
