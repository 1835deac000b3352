"""The 20-strategy toolkit's protocol (cure-lab deep-active-learning; spec 003, sections 1-4):
its model names, per-dataset batch sizes, normalisation and augmentation, and fixed settings."""

MODELS = {  # --model -> (models registry name, options)
    "ResNet18": ("resnet18", {"width": 16}),  # the slim CIFAR ResNet-18 (16-32-64-128, ~0.7 M parameters)
    "ResNet34": ("resnet34", {"width": 16}),
    "ResNet18_64": ("resnet18", {"width": 16, "pool": 4}),  # fixed 4x4 pooling: 512-d features on 64x64
    "LeNet": ("lenet", {}),
}

DATASETS = {  # training batch, normalisation, augmentation (random crop padding, horizontal flip)
    "mnist": dict(batch=128, mean=(0.1307,), std=(0.3081,), crop_padding=0, flip=True),
    "svhn": dict(batch=128, mean=(0.4377, 0.4438, 0.4728), std=(0.1980, 0.2010, 0.1970), crop_padding=4, flip=True),
    "cifar10": dict(batch=256, mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616), crop_padding=4,
                    flip=True),
    "cifar100": dict(batch=2048, mean=(0.5071, 0.4867, 0.4408), std=(0.2675, 0.2565, 0.2761), crop_padding=4,
                     flip=True),
    "tinyimagenet": dict(batch=1024, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), crop_padding=4,
                         flip=True),
}
OTHER_DATASET = dict(batch=64)  # digits, caltech101, folder:PATH: their own normalisation and augmentation

TEST_BATCH = 512
WEIGHT_DECAY = 5e-4
GRAD_CLIP = 0.1  # gradients are clamped element-wise to [-0.1, 0.1], as the toolkit
MNIST_SCHEDULE = [20, 40]  # the toolkit forces these milestones on MNIST
MC_SAMPLES = 10  # MC-dropout passes (BALD, the *Dropout strategies, BatchBALD)
MC_DROPOUT = 0.2  # dropout before the classifier of ResNets for the MC-dropout strategies
LENET_MIN_SIZE = 28  # smaller images (digits) are resized to 28x28 for LeNet
LL_DETACH_EPOCH = 120  # learning loss: the module's gradient into the backbone stops after this epoch
