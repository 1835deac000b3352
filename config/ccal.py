"""CCAL's defaults (Du et al., ICCV'21; spec 002 part A): the values of the seed's argument.py and
the values its code hard-codes. Flags of contrast_main.py/active_main.py override the first
group; ``--set KEY=VALUE`` overrides any value."""

# argument.py (A.1.1)
MISMATCH = 0.8  # fraction of unknown-class images in the unlabeled pool
EPOCHS = 1500  # contrastive epochs (the README runs use 700, and 2000 for semantic CIFAR-100)
BATCH_SIZE = 128  # images per process and step (the README: 32 per GPU on 4 GPUs)
TEST_BATCH_SIZE = 100  # images per scoring batch in active_main.py
OPTIMIZER = "sgd"
LR_SCHEDULER = "cosine"
LR_INIT = 0.1  # the warm-up raises it to LR_INIT * WARMUP_MULTIPLIER
WARMUP = 10  # warm-up epochs
WEIGHT_DECAY = 1e-6
SAVE_STEP = 10  # checkpoint every SAVE_STEP epochs
TEMPERATURE = 0.5  # NT-Xent temperature
SIMCLR_DIM = 128  # projection dimension
SIM_LAMBDA = 1.0  # weight of the contrastive loss against the shift classification loss
RESIZE_FACTOR = 0.08  # lower crop scale of the contrastive training augmentation
TARGET = 1500  # queried samples per known class and cycle
SPLIT = 5  # query cycles
K = 100.0  # steepness of the semantic squashing tanh(K (S - T) / 2)
T = 0.9  # its threshold

# hard-coded in the seed's code (A.2, A.4, A.6)
INITIAL_BUDGET = 800  # initial known labels on CIFAR (other datasets: INITIAL_FRACTION of the known images)
INITIAL_FRACTION = 0.08  # 800 / 10,000, the CIFAR fraction
POOL_SEED = 0  # the seed of the initial labels and of the unknown draw, the same for every run
MOMENTUM = 0.9
WARMUP_MULTIPLIER = 10
JITTER = {"p": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}
GRAY_P = 0.2
CROP_RATIO = (3 / 4, 4 / 3)
QUERY_OOD_SAMPLES = 10  # augmented copies per image at query time (forced in the seed)
QUERY_RESIZE_FACTOR = 0.54  # fixed crop scale at query time (forced in the seed)
QUERY_ROTATIONS = 4  # the distinctive score averages the four rotations

# train_classifier/ (A.7)
CLASSIFIER_EPOCHS = 100
CLASSIFIER_LR = 5e-4  # Adam, no weight decay
CLASSIFIER_BATCH = 32
CLASSIFIER_SEEDS = 5  # the reported accuracy is the mean over init seeds 0..4

WIDTH = 64  # channels of the encoders' first ResNet stage (64: CSI's ResNet-18)
