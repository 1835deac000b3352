"""The 20-strategy toolkit's protocol, ``main_al.py --protocol deepal`` (cure-lab deep-active-learning;
spec 003, sections 1-4): its flags, its fixed settings, and (the profile) its per-dataset batch sizes,
normalisation, augmentation and the milestones it forces on MNIST."""

from config import common_keys, with_strategies
from utils.core.config import Key, Tree
from utils.core.errors import UserError
from utils.methods.features import feature_keys
from utils.samplers.registry import Need

SERVES = frozenset({Need.STATE, Need.ENSEMBLE, Need.PREVIOUS_MODEL, Need.MC_DROPOUT})  # what the protocol gives
TOOLKIT_SSL = {  # the toolkit's semi-supervised --strategy names: (--ssl, the query strategy they stand for)
    "fixmatch": ("fixmatch", "RandomSampling"), "flexmatch": ("flexmatch", "RandomSampling"),
    "uda": ("uda", "RandomSampling"), "pseudolabel": ("pseudolabel", "RandomSampling"),
    "ssl_Random": ("mixmatch", "RandomSampling"), "ssl_LC": ("mixmatch", "LeastConfidence"),
    "ssl_Consistency": ("mixmatch", "ConsistencySampling"), "ssl_Diff2AugDirect": ("mixmatch", "TwoViewMargin"),
    "ssl_Diff2AugKmeans": ("mixmatch", "TwoViewMarginKMeans"),
}

MODELS = {  # MODEL -> (models registry name, options)
    "ResNet18": ("resnet18", {"width": 16}),  # the slim CIFAR ResNet-18 (16-32-64-128, ~0.7 M parameters)
    "ResNet34": ("resnet34", {"width": 16}),
    "ResNet18_64": ("resnet18", {"width": 16, "pool": 4}),  # fixed 4x4 pooling: 512-d features on 64x64
    "LeNet": ("lenet", {}),
    "ImageNetResNet18": ("imagenet_resnet18", {}),  # torchvision's ResNet-18 (7x7 stem), for IMAGE_SIZE >= 64
}

PROFILES = {  # the toolkit's args_pool: training batch, normalisation, augmentation (crop padding, flip)
    "mnist": dict(BATCH_SIZE=128, MEAN=[0.1307], STD=[0.3081], CROP_PADDING=0, FLIP=True,
                  SCHEDULE=[20, 40]),  # the toolkit forces these milestones on MNIST
    "fashionmnist": dict(BATCH_SIZE=256, MEAN=[0.1307], STD=[0.3081], CROP_PADDING=0,
                         FLIP=True),  # MNIST's statistics, as the toolkit; no forced milestones (MNIST only)
    "svhn": dict(BATCH_SIZE=128, MEAN=[0.4377, 0.4438, 0.4728], STD=[0.1980, 0.2010, 0.1970], CROP_PADDING=4,
                 FLIP=True),
    "cifar10": dict(BATCH_SIZE=256, MEAN=[0.4914, 0.4822, 0.4465], STD=[0.2470, 0.2435, 0.2616], CROP_PADDING=4,
                    FLIP=True),
    "cifar100": dict(BATCH_SIZE=2048, MEAN=[0.5071, 0.4867, 0.4408], STD=[0.2675, 0.2565, 0.2761],
                     CROP_PADDING=4, FLIP=True),
    "gtsrb": dict(BATCH_SIZE=256, MEAN=[0.3337, 0.3064, 0.3171], STD=[0.2672, 0.2564, 0.2629], CROP_PADDING=4,
                  FLIP=True),  # on images resized to 32x32; flipping traffic signs is the toolkit's choice
    "tinyimagenet": dict(BATCH_SIZE=1024, MEAN=[0.485, 0.456, 0.406], STD=[0.229, 0.224, 0.225], CROP_PADDING=4,
                         FLIP=True),
}


def model_keys() -> dict:
    """The MC-dropout settings of the strategies that need dropout (both protocols)."""
    return {
        "MC_SAMPLES": Key(10, "MC-dropout passes (BALD, the *Dropout strategies, BatchBALD)", minimum=1),
        "MC_DROPOUT": Key(0.2, "dropout before the classifier of ResNets for the MC-dropout strategies", minimum=0,
                          below=1),
    }


def ssl_keys() -> dict:
    """Semi-supervised training of the round's model (utils/methods/ssl.py; the toolkit's uda, fixmatch,
    flexmatch, pseudolabel and MixMatch ssl_* strategies). None: the method's own value, given as
    pseudolabel / fixmatch / flexmatch / uda / mixmatch (the toolkit's; the papers' in brackets)."""
    return {
        "SSL": Key("none", "train the round's model with this semi-supervised method over the labeled set and "
                   "the unlabeled pool, with any --strategy (none: supervised, as the toolkit's train)",
                   choices=("none", "pseudolabel", "fixmatch", "flexmatch", "uda", "mixmatch"), flags=("--ssl",)),
        "SSL_BATCH": Key(None, "labeled batch of SSL training (None: 250 / 250 / 250 / BATCH_SIZE / BATCH_SIZE, "
                         "the toolkit's)", type="int", minimum=1),
        "SSL_MU": Key(None, "unlabeled batch = round(SSL_MU x labeled batch) (None: 7 / 5.4 / 7 / 1 / 1, the "
                      "toolkit's; FixMatch's paper 7)", type="float", above=0),
        "SSL_THRESHOLD": Key(None, "confidence threshold of the pseudo-labels (None: 0.95 / 0.95 / 0.95 / 0 / -, "
                             "the toolkit's, but its flexmatch is broken and 0 reproduces it; Lee's 0, UDA's paper "
                             "0.8); FlexMatch: the tau of its class-wise thresholds; UDA: masks max p <= it",
                             type="float", minimum=0, maximum=1),
        "SSL_LAMBDA_U": Key(None, "weight of the unlabeled loss (None: 1 / 1 / 1 / 1 / 100, the toolkit's; Lee's "
                            "alpha_f 3, MixMatch's paper 75 on CIFAR-10)", type="float", minimum=0),
        "SSL_RAMPUP": Key(None, "epochs over which the unlabeled weight ramps up linearly from 0 (Pseudo-Label, "
                          "MixMatch; None: 0 / - / - / - / 200, the toolkit's, so MixMatch reaches only half its "
                          "lambda_u by epoch 100; MixMatch's paper 16k of 1M steps)", type="float", minimum=0),
        "SSL_T": Key(None, "temperature: MixMatch's sharpening, UDA's target softmax, the pseudo-label softmax of "
                     "the others (None: 1 / 1 / 1 / 1 / 0.5, the toolkit's; UDA's paper 0.4)", type="float",
                     above=0),
        "SSL_ALPHA": Key(0.75, "MixMatch: the Beta(alpha, alpha) of its MixUp (the toolkit's and paper's 0.75)",
                         above=0),
        "SSL_EMA": Key(None, "decay of the EMA network that is tested and queried (0: the trained network; None: "
                       "0 / 0 / 0 / 0 / 0.999, the toolkit's; FixMatch's paper 0.999)", type="float", minimum=0,
                       below=1),
        "SSL_EMA_WD": Key(0.02, "with an EMA: each EMA step also multiplies the trained network's weights and "
                          "BatchNorm statistics by 1 - SSL_EMA_WD x lr (the toolkit's MixMatch, from YU1ut's; 0: "
                          "off, as the paper)", minimum=0),
        "SSL_EARLY_STOP": Key(None, "stop a round when its summed training loss changes by less than this between "
                              "epochs (0: never; None: 5e-4 / 5e-4 / 5e-4 / 5e-4 / 0, the toolkit's)", type="float",
                              minimum=0),
        "SSL_TSA": Key("none", "UDA: the Training Signal Annealing schedule of the labeled loss (the toolkit's none; "
                       "the paper's log, linear or exp)", choices=("none", "log", "linear", "exp")),
        "SSL_FLEX_WARMUP": Key(True, "FlexMatch: the threshold warm-up (Eq. 11; the paper's default)"),
        "SSL_STRONG": Key(None, "strong view: RandAugment (FixMatch's, the toolkit's RandAugmentMC) or the "
                          "AutoAugment CIFAR-10 policy (the toolkit's UDA) (None: - / randaugment / randaugment / "
                          "autoaugment / -)", type="str", choices=("randaugment", "autoaugment")),
        "SSL_STRONG_GROUPS": Key(8, "strong view: the unlabeled batch is cut into this many slices, each with its "
                                 "own random ops and magnitudes (torchvision draws one set per call)", minimum=1),
        "SSL_RANDAUG_OPS": Key(2, "RandAugment: ops drawn per image (the toolkit's and FixMatch's 2)", minimum=1),
        "SSL_RANDAUG_LEVEL": Key(9, "RandAugment: magnitude levels v ~ U{1..this} of 10 (the toolkit's "
                                 "randint(1, 10))", minimum=1, maximum=10),
        "SSL_RANDAUG_P": Key(0.5, "RandAugment: probability of applying each drawn op (the toolkit's 0.5)",
                             minimum=0, maximum=1),
        "SSL_CUTOUT": Key(None, "strong view: Cutout of a square of this fraction of the side, grey (None: - / 0.5 "
                          "/ 0.5 / 0 / -, the toolkit's)", type="float", minimum=0, maximum=1),
    }


# --budget: the label regimes of Lüth et al. (NeurIPS'23, "Navigating the pitfalls of active learning evaluation"),
# their code's config/active/cifar10_{low,med,high}.yaml: 50/250/1000 initial labels (class-balanced) and as many
# per query on CIFAR-10's 10 classes, for 10 AL iterations: (initial, per query) per class
BUDGET_REGIMES = {"low": (5, 5), "mid": (25, 25), "high": (100, 100)}
BUDGET_QUERIES = 10


def budget_counts(regime: str, num_classes: int, pool_size: int) -> tuple[int, int, int]:
    """(initial labels, labels per query, labels at the end) of a --budget regime on a pool of
    ``pool_size`` images in ``num_classes`` classes: per-class counts times the classes, BUDGET_QUERIES
    queries; a pool too small for them stops with one line."""
    start, query = (n * num_classes for n in BUDGET_REGIMES[regime])
    end = start + BUDGET_QUERIES * query
    if end > pool_size:
        raise UserError(f"--budget {regime} needs {start} + {BUDGET_QUERIES}*{query} = {end} labels, more than the "
                        f"{pool_size}-image pool; choose a smaller regime")
    return start, query, end


def tree() -> Tree:
    keys = {
        "PROTOCOL": Key("deepal", "the training protocol", choices=("deepal", "rethinking"), flags=("--protocol",)),
        "STRATEGY": Key(None, "the query strategy (any of the registry; see the README's table)", type="str",
                        flags=("--strategy",)),
        "MODEL": Key("ResNet18", "the toolkit's network", choices=tuple(MODELS), flags=("--model",)),
        **common_keys("cifar10", seed=1),
        "N_START": Key(10.0, "percent of the pool labeled at random at start", minimum=0, maximum=100,
                       flags=("--nStart",)),
        "N_QUERY": Key(1.0, "percent of the pool queried per round (-1: one query up to N_END)",
                       flags=("--nQuery",)),
        "N_END": Key(100.0, "percent of the pool labeled at the end (-1: 100)", flags=("--nEnd",)),
        "BUDGET": Key(None, "a label regime of Lüth et al. (2023) instead of N_START/N_QUERY/N_END: per class "
                      + ", ".join(f"{k} {a} initial (class-balanced) and {b} per query" for k, (a, b) in
                                  BUDGET_REGIMES.items()) + f", {BUDGET_QUERIES} queries (None: the percents)",
                      type="str", choices=tuple(BUDGET_REGIMES), flags=("--budget",)),
        "CYCLES": Key(None, "rounds to run (trainings; None: every round up to N_END)", type="int", minimum=1,
                      flags=("--cycles",), resumable=True),
        "N_EPOCH": Key(100, "epochs per round; every round retrains a copy of the same initial network",
                       minimum=1, flags=("--n_epoch", "--epochs")),
        "OPTIMIZER": Key("SGD", "optimizer of the task model (the toolkit always used SGD; its YF crashed and "
                         "is refused)", choices=("SGD", "Adam", "YF"), flags=("--optimizer",)),
        "LR": Key(0.1, "learning rate", above=0, flags=("--lr",)),
        "MOMENTUM": Key(0.9, "SGD momentum", minimum=0, maximum=1, flags=("--momentum",)),
        "SCHEDULE": Key([80, 120], "epochs at which the learning rate is multiplied by GAMMAS", type="list[int]",
                        minimum=0, nargs="+", per_epochs="N_EPOCH", flags=("--schedule",)),
        "GAMMAS": Key([0.1, 0.1], "the learning-rate factor at each SCHEDULE epoch", type="list[float]", minimum=0,
                      nargs="+", flags=("--gammas",)),
        "WEIGHT_DECAY": Key(5e-4, "weight decay", minimum=0),
        "GRAD_CLIP": Key(0.1, "gradients are clamped element-wise to [-GRAD_CLIP, GRAD_CLIP]", above=0),
        "BATCH_SIZE": Key(64, "training batch (the toolkit's per-dataset value; 64 for datasets it lacks)",
                          minimum=1),
        "TEST_BATCH": Key(512, "test and pool-scoring batch", minimum=1),
        "MEAN": Key(None, "normalisation mean per channel (None: the dataset's own)", type="list[float]"),
        "STD": Key(None, "normalisation std per channel (None: the dataset's own)", type="list[float]", above=0),
        "CROP_PADDING": Key(None, "random-crop padding in pixels (None: the dataset's own)", type="int", minimum=0),
        "FLIP": Key(None, "random horizontal flips (None: the dataset's own)", type="bool"),
        "LENET_MIN_SIZE": Key(28, "smaller images (digits) are resized to this side for LeNet", minimum=8),
        "N_ENSEMBLES": Key(5, "members of the Ensembles strategy", minimum=1, flags=("--n_ensembles",)),
        **model_keys(),
        **ssl_keys(),
        **open_set_keys(),
        **own_images_keys("N_QUERY's percent (--nQuery)"),
        **feature_keys(),
        "SAVE_MODEL": Key(False, "save every round's model under <out>/models/", switch=True, resumable=True,
                          flags=("--save_model", "--save-models")),
    }
    tree = Tree("main_al.py --protocol deepal", keys, profile=_profile, check=_check, epochs_key="N_EPOCH",
                strategy_key="STRATEGY")
    return with_strategies(tree, SERVES, names={name: query for name, (_, query) in TOOLKIT_SSL.items()})


def open_set_keys() -> dict:
    return {
        "KNOWN_CLASSES": Key(None, "only K classes are known: queried images of the others are discarded and "
                             "cycles.csv records the query's precision and recall", type="int", minimum=1,
                             flags=("--known-classes",)),
        "KNOWN_CLASSES_RANDOM": Key(False, "a seeded random choice of the known classes (default: 0..K-1)",
                                    switch=True, flags=("--known-classes-random",)),
    }


def own_images_keys(query_fallback: str) -> dict:
    """Who answers the queries, the query size as a count, and ImageNet weights (both protocols)."""
    return {
        "ORACLE": Key("simulated", "who labels the queried images: simulated (the dataset's labels), human (fill in "
                      "<out>/to_label/cycle<C>.csv, then --resume) or folder (move them into PATH/labeled/<class>/); "
                      "human and folder need folder:PATH with labeled/ and unlabeled/",
                      choices=("simulated", "human", "folder"), flags=("--oracle",), resumable=True),
        "QUERY_SIZE": Key(None, f"images per query, a count (None: {query_fallback})", type="int", minimum=1,
                          flags=("--query-size",)),
        "POLL_SECONDS": Key(5.0, "--oracle folder: seconds between two looks at the folder", minimum=0.01,
                            resumable=True),
        "PRETRAINED": Key(None, "a torchvision ImageNet ResNet-18 weights file (resnet18-*.pth) for the ImageNet "
                          "ResNet-18: its whole trunk starts from it, the classifier fresh", type="str",
                          flags=("--pretrained",)),
    }


def _profile(values: dict) -> tuple:
    dataset = str(values["DATASET"]).lower()
    return f"toolkit {dataset}", PROFILES.get(dataset, {})


def _check(cfg) -> None:
    given = [k for k in ("N_START", "N_QUERY", "N_END", "QUERY_SIZE") if cfg.sources.get(k, "default") != "default"]
    if cfg.BUDGET is not None and given:
        raise UserError(f"--budget {cfg.BUDGET} sets the initial set, the query size and the end; drop "
                        f"{', '.join(given)} (or --budget)")
    if cfg.OPTIMIZER == "YF":
        raise UserError("--optimizer YF (YellowFin) is not available (it crashes in the toolkit, which trained with "
                        "SGD whatever the flag); use --optimizer SGD")
    if len(cfg.GAMMAS) != len(cfg.SCHEDULE):
        raise UserError(f"GAMMAS has {len(cfg.GAMMAS)} value(s) and SCHEDULE {len(cfg.SCHEDULE)}; give one factor "
                        "per milestone (--gammas, --schedule)")
