"""CCAL (Du et al., ICCV'21; spec 002 part A): the settings of contrast_main.py (``contrast_tree``)
and active_main.py (``active_tree``).

The seed's argument.py flags (A.1.1) set the keys named after them (``--batch_size`` ->
BATCH_SIZE); ``--epochs`` (the seed README's ``--epoch``) sets EPOCHS in contrast_main.py and
CLASSIFIER_EPOCHS in active_main.py, ``--cycles`` sets CYCLES in active_main.py. The query-time
values the seed forces (A.6) keep the names QUERY_*, set by the seed's ``--ood_samples`` and
``--resize_factor``; the other keys are the constants the seed hard-codes (A.2, A.4, A.6, A.7).
The warm-up is not scaled by ``--epochs`` (the seed's runs use 10 warm-up epochs at 700 and at
2,000 epochs). ``--set KEY=VALUE`` changes any key; ``--list-settings`` lists them.
"""

from config import common_keys, save_models_key, with_strategies
from utils.core.config import Key, Tree
from utils.core.errors import UserError
from utils.samplers.registry import Need

CONTRAST, ACTIVE = "contrast_main.py", "active_main.py"

# --mode of contrast_main.py: the seed's spellings and ours -> the seed's names
MODES = {"senmatic": "senmatic", "semantic": "senmatic", "feature": "feature", "distinctive": "feature"}
SHIFT_OF_MODE = {"senmatic": "none", "feature": "rotation"}  # the shift transform each encoder trains with
ROLE = {"senmatic": "semantic", "feature": "distinctive"}


def shared_keys() -> dict:
    """The keys both scripts read: the data, the mismatch pool (A.2) and the augmentation that
    makes the contrastive views and the query's views (A.4, A.6)."""
    keys = common_keys("cifar10", seed=0, trials=1)
    return {
        **keys,
        # ---------------------------------------------------------------- the seed's flags (A.1.1)
        "MODEL": Key("resnet18", "encoder backbone: CSI's CIFAR ResNet-18 (the seed's resnet18_imagenet is not "
                     "supported)", choices=("resnet18",), flags=("--model",)),
        "MISMATCH": Key(0.8, "fraction of unknown-class images in the unlabeled pool", minimum=0, below=1,
                        flags=("--mismatch",)),
        # ---------------------------------------------------------------- ours (other datasets)
        "KNOWN_CLASSES": Key(None, "the known classes (None: CCAL's list for cifar10 and cifar100; required for "
                             "other datasets, e.g. 0,1)", type="list[int]", minimum=0, flags=("--known-classes",)),
        "INITIAL_BUDGET": Key(None, "initial known labels (None: 800 on cifar10/cifar100 as the seed, otherwise "
                              "INITIAL_FRACTION of the known training images, at least 2 per known class)",
                              type="int", minimum=1, flags=("--initial-budget",)),
        # ---------------------------------------------------------------- hard-coded in the seed (A.2, A.4)
        "INITIAL_FRACTION": Key(0.08, "initial labels as a fraction of the known images when INITIAL_BUDGET is None "
                                "outside CIFAR (800 / 10,000, the CIFAR fraction)", above=0, maximum=1),
        "POOL_SEED": Key(0, "seed of the initial labels and of the unknown draw, the same for every run (the seed's 0)",
                         minimum=0),
        "JITTER_P": Key(0.8, "probability of the colour jitter of a view", minimum=0, maximum=1),
        "BRIGHTNESS": Key(0.4, "colour jitter: brightness factor drawn from [1 - b, 1 + b]", minimum=0, maximum=1),
        "CONTRAST": Key(0.4, "colour jitter: contrast factor drawn from [1 - c, 1 + c]", minimum=0, maximum=1),
        "SATURATION": Key(0.4, "colour jitter: saturation factor drawn from [1 - s, 1 + s]", minimum=0, maximum=1),
        "HUE": Key(0.1, "colour jitter: hue shift drawn from [-h, h] x 255/360 of the colour circle (CSI's scale)",
                   minimum=0, maximum=0.5),
        "GRAY_P": Key(0.2, "probability of turning a view grayscale", minimum=0, maximum=1),
        "CROP_RATIO": Key([3 / 4, 4 / 3], "aspect-ratio range of the random resized crop (low, high)",
                          type="list[float]", above=0),
    }


def contrast_tree() -> Tree:
    """contrast_main.py: the contrastive pre-training of one encoder (A.4)."""
    keys = shared_keys()
    del keys["TRIALS"], keys["MAX_TEST_SAMPLES"]  # one encoder per run; no test images are used
    keys.update({
        # ---------------------------------------------------------------- the seed's flags (A.1.1)
        "MODE": Key(None, "senmatic (alias semantic): the semantic encoder, SimCLR; feature (alias distinctive): the "
                    "distinctive encoder, CSI with rotations (required)", type="str", choices=MODES,
                    flags=("--mode",)),
        "SHIFT_TRANS_TYPE": Key("none", "shift transform: none (SimCLR) or rotation (CSI's 4 rotations); follows "
                                "MODE unless given, and must be MODE's (the seed's cutperm is not supported)",
                                choices=("none", "rotation"), flags=("--shift_trans_type",)),
        "EPOCHS": Key(1500, "contrastive training epochs (the README: 700, 2000 for semantic CIFAR-100)", minimum=1,
                      flags=("--epochs", "--epoch")),
        "BATCH_SIZE": Key(128, "images per process and step (the README: 32 per GPU on 4 GPUs)", minimum=1,
                          flags=("--batch_size",)),
        "OPTIMIZER": Key("sgd", "sgd (momentum MOMENTUM) or adam; lars is not available (the seed raises too)",
                         choices=("sgd", "adam", "lars"), flags=("--optimizer",)),
        "LR_SCHEDULER": Key("cosine", "after the warm-up: cosine annealing, or step_decay (x0.1 with sgd, x0.3 with "
                            "adam, after half and three quarters of EPOCHS)", choices=("cosine", "step_decay"),
                            flags=("--lr_scheduler",)),
        "LR_INIT": Key(0.1, "initial learning rate; the warm-up raises it to LR_INIT x WARMUP_MULTIPLIER", above=0,
                       flags=("--lr_init",)),
        "WARMUP": Key(10, "warm-up epochs (below EPOCHS; 0: none)", minimum=0, flags=("--warmup",)),
        "WEIGHT_DECAY": Key(1e-6, "weight decay of the optimizer", minimum=0, flags=("--weight_decay",)),
        "SAVE_STEP": Key(10, "write the checkpoint every SAVE_STEP epochs (and at the end)", minimum=1,
                         flags=("--save_step",), resumable=True),
        "TEMPERATURE": Key(0.5, "NT-Xent temperature (the seed hard-codes 0.5)", above=0,
                           flags=("--temperature",)),
        "SIMCLR_DIM": Key(128, "projection dimension (the seed hard-codes 128)", minimum=1, flags=("--simclr_dim",)),
        "SIM_LAMBDA": Key(1.0, "weight of the contrastive loss against the shift classification loss", minimum=0,
                          flags=("--sim_lambda",)),
        "RESIZE_FACTOR": Key(0.08, "lower crop scale of the training views", above=0, maximum=1,
                             flags=("--resize_factor",)),
        "RESIZE_FIX": Key(False, "fix the crop scale of the training views to RESIZE_FACTOR", switch=True,
                          flags=("--resize_fix",)),
        # ---------------------------------------------------------------- hard-coded in the seed (A.3, A.4)
        "MOMENTUM": Key(0.9, "SGD momentum", minimum=0, maximum=1),
        "WARMUP_MULTIPLIER": Key(10.0, "the warm-up multiplies the learning rate by this (GradualWarmupScheduler)",
                                 minimum=1),
        "WIDTH": Key(64, "channels of the encoder's first ResNet stage (64: CSI's ResNet-18)", minimum=1),
    })
    return Tree(CONTRAST, keys, profile=_contrast_profile, check=_check, epochs_key="EPOCHS")


def active_tree() -> Tree:
    """active_main.py: the joint query with the two fixed encoders and the per-cycle classifier
    (A.6, A.7)."""
    keys = shared_keys()
    keys.update({
        # ---------------------------------------------------------------- the seed's flags (A.1.1)
        "TARGET": Key(1500, "samples queried per known class and cycle", minimum=1, flags=("--target",)),
        "SPLIT": Key(5, "query cycles; the run trains and tests SPLIT + 1 classifier cycles", minimum=1,
                     flags=("--split",)),
        "K": Key(100.0, "steepness of the semantic squashing tanh(K (S - T) / 2)", flags=("--k",)),
        "T": Key(0.9, "threshold of the semantic squashing", flags=("--t",)),
        "TEST_BATCH_SIZE": Key(100, "images per query-feature block and per test batch", minimum=1,
                               flags=("--test_batch_size",)),
        # ---------------------------------------------------------------- forced in the seed's query (A.6)
        "QUERY_OOD_SAMPLES": Key(10, "augmented copies per image at query time (the seed forces 10)", minimum=1,
                                 flags=("--ood_samples",)),
        "QUERY_RESIZE_FACTOR": Key(0.54, "fixed crop scale at query time (the seed forces 0.54)",
                                   above=0, maximum=1, flags=("--resize_factor",)),
        "QUERY_ROTATIONS": Key(4, "rotations 0..R-1 whose features the distinctive score averages (4: the seed)",
                               choices=(1, 2, 3, 4)),
        # ---------------------------------------------------------------- ours
        "CYCLES": Key(None, "classifier cycles to run (None: SPLIT + 1; at most SPLIT + 1)", type="int", minimum=1,
                      flags=("--cycles",), resumable=True),
        "WIDTH": Key(None, "channels of the encoders' first ResNet stage (contrast_main.py's WIDTH): None takes it "
                     "from the encoder files, a number must match them", type="int", minimum=1),
        # ---------------------------------------------------------------- train_classifier/ (A.7)
        "CLASSIFIER_EPOCHS": Key(100, "training epochs of each classifier", minimum=1, flags=("--epochs", "--epoch")),
        "CLASSIFIER_LR": Key(5e-4, "Adam learning rate of the classifier (no weight decay)", above=0),
        "CLASSIFIER_BATCH": Key(32, "classifier batch (a last batch of fewer than 2 images is dropped)", minimum=2),
        "CLASSIFIER_FROZEN_BN": Key(False, "train the classifier's epochs after the first in eval mode (BatchNorm "
                                    "frozen at epoch-1 statistics), as the seed did by accident: its per-epoch "
                                    "test never switched back to train mode; the published accuracies"),
        "SAVE_MODEL": save_models_key("every cycle's classifiers (trial<T>_cycle<C>_seed<S>.pt)"),
        "CLASSIFIER_SEEDS": Key(5, "classifiers per cycle (init seeds); the reported accuracy is their mean",
                                minimum=1),
    })
    return with_strategies(Tree(ACTIVE, keys, check=_check, epochs_key="CLASSIFIER_EPOCHS"), {Need.CCAL_FEATURES},
                           runs_hooks=False, only=("CCAL",))


def _contrast_profile(values: dict) -> tuple:
    """SHIFT_TRANS_TYPE follows MODE unless given (A.1.1: none for senmatic, rotation for feature)."""
    if values["MODE"] is None:
        return "", {}
    return f"--mode {values['MODE']}", {"SHIFT_TRANS_TYPE": SHIFT_OF_MODE[values["MODE"]]}


def _check(cfg) -> None:
    if len(cfg.CROP_RATIO) != 2 or not cfg.CROP_RATIO[0] <= cfg.CROP_RATIO[1]:
        raise UserError(f"CROP_RATIO needs two ratios 0 < low <= high, e.g. 0.75,1.3333, got {cfg.CROP_RATIO}")
    known = cfg.KNOWN_CLASSES
    if known is not None and len(set(known)) != len(known):
        raise UserError(f"--known-classes needs distinct class numbers, got {cfg.KNOWN_CLASSES}")
    if known is not None and len(known) < 2:
        raise UserError(f"--known-classes needs at least two classes (a one-class classifier learns nothing), got "
                        f"{cfg.KNOWN_CLASSES}")
    if cfg.script == CONTRAST:
        _check_contrast(cfg)
    elif cfg.CYCLES is not None and cfg.CYCLES > cfg.SPLIT + 1:
        raise UserError(f"--cycles {cfg.CYCLES} needs more than --split {cfg.SPLIT} queries; raise --split or "
                        f"lower --cycles to at most {cfg.SPLIT + 1}")


def _check_contrast(cfg) -> None:
    if cfg.OPTIMIZER == "lars":
        raise UserError("--optimizer lars is not available (the seed raises too); use --optimizer sgd")
    if cfg.MODE is not None and cfg.SHIFT_TRANS_TYPE != SHIFT_OF_MODE[cfg.MODE]:
        raise UserError(f"--mode {cfg.MODE} trains with --shift_trans_type {SHIFT_OF_MODE[cfg.MODE]}, not "
                        f"{cfg.SHIFT_TRANS_TYPE}")
    if cfg.WARMUP >= cfg.EPOCHS:
        raise UserError(f"--warmup {cfg.WARMUP} is not below --epochs {cfg.EPOCHS}: the learning rate would never "
                        f"leave the warm-up; lower --warmup (e.g. --warmup 0) or raise --epochs")
