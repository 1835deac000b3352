"""scikit-learn's handwritten digits (1x8x8, 1,437 train / 360 test): the offline default (ours, the
seed has none), sized so `bash run.sh` runs TOD end to end in a few minutes on 2 CPU cores: a
ResNet-18 at width 16, batch 20, SGD 0.03, 20 epochs per cycle; START 100, ADDENDUM 40."""

DATASET = "digits"
WIDTH = 16
BATCH = 20
SUBSET = 700
START = 100
ADDENDUM = 40
EPOCH = 20
LR = 0.03
MILESTONES = [16]
EPOCHL = 12
