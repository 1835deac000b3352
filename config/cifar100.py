"""CIFAR-100, as TOD's config/cifar100.py: the CIFAR-10 values (config/tod.py's defaults) but for
the weight of the COD loss."""

DATASET = "cifar100"
WEIGHT = 0.05
