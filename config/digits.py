"""scikit-learn's handwritten digits (1x8x8, 1,437 train / 360 test): the offline default,
sized so `bash run.sh` runs TOD end to end in a few minutes on 2 CPU cores."""

DATASET = "digits"
CLASS = 10
NUM_TRAIN = 1437
BATCH = 20
SUBSET = 700
START = 100
ADDENDUM = 40
TRIALS = 3
CYCLES = 7
MARGIN = 1.0
WEIGHT = 0.02
EPOCH = 20
LR = 0.03
MOMENTUM = 0.9
WDECAY = 5e-4
MILESTONES = [16]
EPOCHL = 12
WIDTH = 16
