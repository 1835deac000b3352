"""CIFAR-10, as TOD's config/cifar10.py: its values are the defaults of config/tod.py (listed by
``python main_TOD.py --config cifar10 --list-settings``). The seed's CLASS and NUM_TRAIN are left
out here and in the other dataset configs: the dataset decides both (the pool is the whole
training split, the seed's index range)."""

DATASET = "cifar10"
