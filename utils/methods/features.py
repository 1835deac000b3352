"""Feature sources: the embeddings the representation-based strategies select on (``--features``),
the initial labeled set chosen on them (``--init-strategy``) and the linear classifier trained on
them (``--train-mode linear``).

``FEATURES`` is one of

- ``model`` (the default): the task model's penultimate features, as before (no source);
- ``simclr``: a slim CIFAR ResNet-18 trained with SimCLR (Chen et al., ICML'20: NT-Xent of two
  augmented views, utils/methods/contrastive.py) on the run's training pool without its labels;
- ``file:PATH``: an ``N x D`` ``.npy`` array, one row per training image in the dataset's order
  (own images: the run's image list, ``<out>/images.csv``);
- ``torchvision:ARCH:WEIGHTS``: the trunk of a torchvision classification architecture (its
  classifier removed) with the weights file ``WEIGHTS`` (no download), on images resized to the
  input size and normalised with the statistics of the architecture's ImageNet weights.

A computed source (simclr, torchvision) is cached under ``<data-root>/features/<dataset>/`` in one
file named by the hash of its provenance (dataset, pool, source and its settings); the file holds
the provenance, the embeddings of the pool and of the test images and (simclr) the encoder's
weights, and is reused by every run and trial whose provenance matches.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.output import ModelOutput
from utils.core.data import IMAGENET_MEAN, IMAGENET_STD, make_loader
from utils.core.errors import UserError
from utils.core.results import atomic_write
from utils.core.splits import pool_fingerprint

SIMCLR_TEMPERATURE = 0.5  # NT-Xent's t (SimCLR's CIFAR-10 value)
SIMCLR_PROJECTION = 128  # the projection head's output dimension (SimCLR)
SIMCLR_JITTER = {"p": 0.8, "brightness": 0.4, "contrast": 0.4, "saturation": 0.4, "hue": 0.1}  # SimCLR's s = 0.5
SIMCLR_GRAY_P = 0.2


def declared(what: str) -> list:
    """The registered strategies declared ``embeddings`` (they read the feature source when one is given)
    or ``model_free`` (they choose without a trained model: the initial set), RandomSampling left out."""
    from utils.samplers import get_strategy, list_strategies

    return [n for n in list_strategies() if getattr(get_strategy(n), what) and n != "RandomSampling"]


@dataclass
class FeatureSource:
    """Embeddings by dataset index: ``train`` ``[len(train_index), D]`` for the images
    ``train_index`` of the training split, ``test`` for ``test_index`` of the test split (None: not
    available, e.g. a ``file:`` source). ``spec`` is the FEATURES value, ``provenance`` how they were made."""

    spec: str
    train: torch.Tensor
    train_index: np.ndarray
    test: torch.Tensor | None = None
    test_index: np.ndarray | None = None
    provenance: dict | None = None

    @property
    def dim(self) -> int:
        return int(self.train.shape[1])

    def rows(self, indices: np.ndarray, test: bool = False) -> torch.Tensor:
        """The embeddings of dataset ``indices`` (training split, or the test split with ``test``)."""
        table, index = (self.test, self.test_index) if test else (self.train, self.train_index)
        position = np.full(int(index.max()) + 1 if len(index) else 0, -1, dtype=np.int64)
        position[index] = np.arange(len(index))
        indices = np.asarray(indices, dtype=np.int64)
        found = position[indices] if len(indices) and indices.max() < len(position) else None
        if found is None or (found < 0).any():
            raise ValueError(f"feature source {self.spec} has no row for some of the requested images")
        return table[torch.as_tensor(found)]


def query_embeddings(strategy, source: FeatureSource | None, cfg=None) -> FeatureSource | None:
    """The source a query of ``strategy`` reads (QueryContext.embeddings): ``source`` for the strategies that
    select on embeddings, None (the model's features) for the others (BADGE's are its head's gradients); a
    notice when the run's settings ``cfg`` give the source no use at all."""
    if source is not None and not strategy.embeddings and cfg is not None and \
            getattr(cfg, "TRAIN_MODE", "full") == "full" and init_strategy(cfg) is None:
        print(f"notice: --features {source.spec}: {strategy.name} selects on the model's outputs; the source serves "
              f"{', '.join(declared('embeddings'))}, --init-strategy and --train-mode linear", flush=True)
    return source if strategy.embeddings else None


# ----------------------------------------------------------------------------- the settings

def feature_keys(linear: bool = True) -> dict:
    """The settings of the feature source, the initial set and (``linear``: where the script has it) the
    training mode, for every script that runs strategies on a pool."""
    from utils.core.config import Key

    keys = {
        "FEATURES": Key("model", "embeddings the representation strategies (and KCenterGreedy, KMeansSampling, "
                        "CoreSet, --init-strategy) select on: model (the task model's), simclr (a self-supervised "
                        "encoder of the pool, cached under <data-root>/features/), file:PATH (an N x D .npy, one row "
                        "per training image) or torchvision:ARCH:WEIGHTS (a local weights file)",
                        flags=("--features",)),
        "FEATURE_EPOCHS": Key(60, "--features simclr: SimCLR epochs over the pool", minimum=1),
        "FEATURE_BATCH": Key(256, "--features simclr: images per SimCLR batch (2 views each)", minimum=2),
        "FEATURE_LR": Key(1e-3, "--features simclr: Adam learning rate (cosine to 0)", above=0),
        "FEATURE_WIDTH": Key(16, "--features simclr: width of the slim CIFAR ResNet-18 encoder (16: 128-d features)",
                             minimum=4),
        "INIT_STRATEGY": Key("random", "how the initial labeled set is chosen: random, or a strategy that needs no "
                             f"trained model ({', '.join(declared('model_free'))}) on --features",
                             flags=("--init-strategy",)),
    }
    if linear:
        keys["TRAIN_MODE"] = Key("full", "full (the network) or linear (a linear classifier on the --features "
                                 "embeddings)", choices=("full", "linear"), flags=("--train-mode",))
    return keys


def check_settings(cfg) -> None:
    """The FEATURES value's form and the initial-set strategy, before any data is read."""
    spec = cfg.FEATURES
    kind = spec.split(":", 1)[0].lower()
    if kind not in ("model", "simclr", "file", "torchvision") or (kind in ("model", "simclr") and spec.lower() != kind):
        raise UserError(f"--features {spec}: give model, simclr, file:PATH or torchvision:ARCH:WEIGHTS")
    if kind == "torchvision" and len(spec.split(":", 2)) != 3:
        raise UserError(f"--features {spec}: give torchvision:ARCH:WEIGHTS (e.g. torchvision:resnet18:resnet18.pth)")
    if kind == "file" and not spec[5:]:
        raise UserError("--features file:PATH needs the path of an N x D .npy file")
    init_strategy(cfg)
    if getattr(cfg, "TRAIN_MODE", "full") == "linear" and kind == "model":
        raise UserError("--train-mode linear trains on fixed embeddings: give --features simclr, file:PATH or "
                        "torchvision:ARCH:WEIGHTS")


def init_strategy(cfg):
    """The registered strategy choosing the initial labeled set (None: at random, as before)."""
    from utils.samplers import get_strategy

    if cfg.INIT_STRATEGY.lower() in ("random", "randomsampling"):
        return None
    strategy = get_strategy(cfg.INIT_STRATEGY)
    if not strategy.model_free or strategy.needs:
        raise UserError(f"--init-strategy {cfg.INIT_STRATEGY}: {strategy.name} needs a trained model; choose random "
                        f"or one of {', '.join(declared('model_free'))}")
    if cfg.FEATURES == "model":
        raise UserError(f"--init-strategy {strategy.name} chooses on embeddings before any model is trained: give "
                        "--features simclr, file:PATH or torchvision:ARCH:WEIGHTS")
    return strategy


# ----------------------------------------------------------------------------- building a source

def feature_source(cfg, data, dist, root: str) -> FeatureSource | None:
    """The run's feature source (None for ``model``), read, or computed and cached under
    ``<root>/features/``; a missing file, a wrong shape or weights that do not fit stop with one line."""
    spec = cfg.FEATURES
    kind = spec.split(":", 1)[0].lower()
    if kind == "model":
        return None
    if kind == "file":
        return read_file_source(spec, spec[5:], data)
    if kind == "torchvision":
        _, arch, weights = spec.split(":", 2)
        encoder, size, mean, std = torchvision_trunk(arch, weights)
        provenance = {"source": "torchvision", "arch": arch, "weights_sha256": _sha256(weights), "input_size": size}
        return cached(spec, provenance, data, root, lambda: (encoder, None), dist,
                      lambda images: _imagenet_input(images, size, mean, std))
    provenance = {"source": "simclr", "arch": "resnet18", "width": cfg.FEATURE_WIDTH, "epochs": cfg.FEATURE_EPOCHS,
                  "batch": cfg.FEATURE_BATCH, "lr": cfg.FEATURE_LR, "seed": cfg.SEED,
                  "image_size": int(data.train.__getitems__([0])[0].shape[-1])}
    normalise = _normaliser(data)
    return cached(spec, provenance, data, root, lambda: train_simclr(cfg, data, dist, normalise), dist, normalise)


def read_file_source(spec: str, path: str, data) -> FeatureSource:
    """``file:PATH``: an ``N x D`` float array with N the number of training images."""
    if not os.path.isfile(path):
        raise UserError(f"--features {spec}: no file {path}")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError) as error:
        raise UserError(f"--features {spec}: not a .npy array ({str(error).splitlines()[0]})") from None
    n = len(data.train)
    if array.ndim != 2 or array.shape[0] != n or array.shape[1] < 1:
        raise UserError(f"--features {spec}: expected an N x D array with N = {n} (one row per training image in the "
                        f"dataset's order), got shape {tuple(array.shape)}")
    if not np.issubdtype(array.dtype, np.number) or not np.isfinite(array).all():
        raise UserError(f"--features {spec}: the array must hold finite numbers")
    return FeatureSource(spec, torch.as_tensor(array, dtype=torch.float32), np.arange(n),
                         provenance={"source": "file", "path": os.path.abspath(path), "sha256": _sha256(path)})


def cache_path(root: str, data, provenance: dict) -> str:
    """``<root>/features/<dataset>/<source>-<hash of the provenance>.pt``."""
    digest = hashlib.sha256(json.dumps(provenance, sort_keys=True).encode()).hexdigest()[:16]
    name = data.name.replace("folder:", "folder-").replace(os.sep, "-")
    return os.path.join(root, "features", name, f"{provenance['source']}-{digest}.pt")


def cached(spec: str, provenance: dict, data, root: str, make, dist, prepare) -> FeatureSource:
    """The source of ``provenance`` (plus the run's dataset and pool) from its cache file, or made now:
    ``make()`` -> (encoder, trunk weights to keep or None), whose features of the pool and test
    images (``prepare``: uint8 batch -> the encoder's input) are saved with the provenance."""
    provenance = {"dataset": data.name, "pool": pool_fingerprint(data.train_idx), "pool_size": len(data.train_idx),
                  "test": pool_fingerprint(data.test_idx), **provenance}
    if hasattr(data.train, "paths"):  # image files (own images): their order, by name (answered images move)
        names = "\n".join(os.path.basename(p) for p in data.train.paths)
        provenance["files"] = hashlib.sha256(names.encode()).hexdigest()[:16]
    path = cache_path(root, data, provenance)
    if os.path.isfile(path):
        try:
            record = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 (a damaged cache file is made again)
            record = {}
            print(f"notice: {path} cannot be read; the features are computed again", flush=True)
        if record.get("provenance") == provenance:
            print(f"features: {spec} read from {path}", flush=True)
            return FeatureSource(spec, record["train"], record["train_index"].numpy(), record["test"],
                                 record["test_index"].numpy(), provenance)
    start = time.perf_counter()
    encoder, trunk = make()
    train = embed(encoder, data.train, data.train_idx, prepare, dist)
    test = embed(encoder, data.test, data.test_idx, prepare, dist) if len(data.test_idx) else train[:0]
    record = {"provenance": provenance, "train": train, "train_index": torch.as_tensor(data.train_idx),
              "test": test, "test_index": torch.as_tensor(data.test_idx), "trunk": trunk}
    if dist.is_main:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, lambda fh: torch.save(record, fh))
    print(f"features: {spec} computed in {time.perf_counter() - start:.1f} s, saved to {path}", flush=True)
    return FeatureSource(spec, train, data.train_idx, test, data.test_idx, provenance)


@torch.no_grad()
def embed(encoder: nn.Module, dataset, indices: np.ndarray, prepare, dist, batch_size: int = 256) -> torch.Tensor:
    """``[len(indices), D]`` float32 features of ``encoder`` (eval mode) on the CPU."""
    encoder.eval().to(dist.device)
    rows = []
    for images, _, _ in make_loader(dataset, indices, batch_size, pad=False):
        out = encoder(prepare(images.to(dist.device)))
        rows.append((out.features if isinstance(out, ModelOutput) else out).float().flatten(1).cpu())
    return torch.cat(rows)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _normaliser(data):
    """uint8 batch -> floats normalised with the dataset's own statistics (eval_transform's)."""
    mean, std = data.eval_transform.mean.cpu(), data.eval_transform.std.cpu()

    def normalise(images: torch.Tensor) -> torch.Tensor:
        return (images.float() / 255 - mean.to(images.device)) / std.to(images.device)
    return normalise


# ----------------------------------------------------------------------------- SimCLR

class ProjectionHead(nn.Module):
    """SimCLR's g: Linear - ReLU - Linear to SIMCLR_PROJECTION dimensions."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(dim, dim), nn.ReLU(inplace=True), nn.Linear(dim, SIMCLR_PROJECTION))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


def train_simclr(cfg, data, dist, normalise) -> tuple[nn.Module, dict]:
    """A slim CIFAR ResNet-18 (``FEATURE_WIDTH``) trained with SimCLR on the pool ``data.train_idx``,
    labels unused: every step two augmented views of a batch (utils/methods/contrastive.py's
    training_views: flip, resized crop, colour jitter, grayscale), the NT-Xent loss (Eq. 1 of Chen et
    al.) of their projections; Adam with a per-step cosine schedule, FEATURE_EPOCHS passes.
    Returns (the encoder, its weights)."""
    from models import build_model
    from utils.methods.contrastive import SimCLRAugment, nt_xent, training_views

    torch.manual_seed(cfg.SEED)
    encoder = build_model("resnet18", 2, data.in_channels, width=cfg.FEATURE_WIDTH, consistency_head=False)
    head = ProjectionHead(encoder.feature_dim)
    encoder.to(dist.device).train()
    head.to(dist.device).train()
    params = [p for p in (*encoder.parameters(), *head.parameters()) if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=cfg.FEATURE_LR, weight_decay=1e-6)
    pool = np.asarray(data.train_idx)
    batch = min(cfg.FEATURE_BATCH, len(pool))
    steps = max(1, len(pool) // batch)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, cfg.FEATURE_EPOCHS * steps)
    augment = SimCLRAugment(SIMCLR_JITTER, SIMCLR_GRAY_P)
    generator = torch.Generator(device="cpu").manual_seed(cfg.SEED)
    rng = np.random.default_rng(cfg.SEED)
    for epoch in range(cfg.FEATURE_EPOCHS):
        order, total = rng.permutation(pool), 0.0
        for step in range(steps):
            images, _, _ = data.train.__getitems__(order[step * batch:(step + 1) * batch])
            x = images.float().div(255)
            views, _ = training_views(x, augment, generator, 1)
            views = normalise(views.to(dist.device) * 255)
            z = head(encoder(views).features)
            loss = nt_xent(*z.chunk(2), SIMCLR_TEMPERATURE)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach())
        if epoch == 0 or (epoch + 1) % max(1, cfg.FEATURE_EPOCHS // 5) == 0:
            print(f"features: SimCLR epoch {epoch + 1}/{cfg.FEATURE_EPOCHS} loss {total / steps:.4f}", flush=True)
    return encoder, {k: v.cpu() for k, v in encoder.state_dict().items()}


# ----------------------------------------------------------------------------- torchvision trunks

def torchvision_trunk(arch: str, weights: str) -> tuple[nn.Module, int, tuple, tuple]:
    """(the trunk of torchvision's ``arch`` with ``weights`` loaded, its input side, mean, std): the
    classifier replaced by the identity, the input size and normalisation those of the architecture's
    ImageNet weights (read from torchvision's metadata; nothing is downloaded)."""
    import torchvision

    spec = f"torchvision:{arch}:{weights}"
    if arch.lower() not in torchvision.models.list_models(torchvision.models):
        raise UserError(f"--features {spec}: torchvision has no classification architecture {arch}")
    if not os.path.isfile(weights):
        raise UserError(f"--features {spec}: no weights file {weights}")
    model = torchvision.models.get_model(arch.lower(), weights=None)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        model.load_state_dict(state)
    except Exception as error:  # noqa: BLE001 (any unreadable or unfitting file is the user's input)
        raise UserError(f"--features {spec}: the weights do not fit {arch} ({str(error).splitlines()[0][:200]})") \
            from None
    for name in ("fc", "classifier", "heads", "head"):
        if isinstance(getattr(model, name, None), nn.Module):
            setattr(model, name, nn.Identity())
            break
    transforms = torchvision.models.get_model_weights(arch.lower()).DEFAULT.transforms()
    return model, int(transforms.crop_size[0]), tuple(transforms.mean), tuple(transforms.std)


def _imagenet_input(images: torch.Tensor, size: int, mean=IMAGENET_MEAN, std=IMAGENET_STD) -> torch.Tensor:
    """uint8 ``[B, C, H, W]`` -> 3-channel images resized to ``size`` and normalised with ``mean``/``std``."""
    x = images.float() / 255
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


# ----------------------------------------------------------------------------- the initial set, the linear mode

def initial_set(strategy, source: FeatureSource, data, labelable: np.ndarray, size: int, dist, seed: int,
                settings) -> np.ndarray:
    """``size`` images of ``labelable`` chosen by ``strategy`` (one that needs no model) on ``source``'s
    embeddings, from an empty labeled set (the cold start)."""
    from utils.samplers.registry import QueryContext

    if size > len(labelable):
        raise UserError(f"the initial set of {size} images is larger than the {len(labelable)} labelable images")
    ctx = QueryContext(None, data, np.empty(0, dtype=np.int64), np.asarray(labelable), size, dist,
                       rng=np.random.default_rng(seed), settings=settings, embeddings=source)
    return np.sort(strategy.select(ctx))


def check_linear(strategy, ssl: str = "none") -> None:
    """What --train-mode linear refuses: MC-dropout strategies (a linear classifier has no dropout to
    sample), strategies training networks of their own on the images, and --ssl."""
    from utils.samplers.registry import Need

    if Need.MC_DROPOUT in strategy.needs:
        raise UserError(f"--train-mode linear: {strategy.name} samples MC-dropout masks and a linear classifier has "
                        "no dropout; use --train-mode full, or a strategy without MC dropout")
    if strategy.training is not None:
        raise UserError(f"--train-mode linear: {strategy.name} trains networks of its own on the images; use "
                        "--train-mode full")
    if ssl != "none":
        raise UserError(f"--train-mode linear trains a linear classifier on the labels only; drop --ssl {ssl}")


def initial_chooser(cfg, data, dist, root: str):
    """``choose(labelable, size, trial)``: a run's initial labeled set, at random (numpy's global RNG, as
    before) or, with --init-strategy, chosen by it on the feature source (computed here; TOD's and
    LL4AL's strategies read no embeddings, so only the initial set uses it)."""
    from utils.core.splits import random_subset

    strategy = init_strategy(cfg)
    source = feature_source(cfg, data, dist, root) if strategy is not None else None
    if strategy is None and cfg.FEATURES != "model":
        print(f"notice: --features {cfg.FEATURES} serves --init-strategy here, and none is given", flush=True)

    def choose(labelable: np.ndarray, size: int, trial: int) -> np.ndarray:
        if strategy is None:
            return random_subset(labelable, size)
        return initial_set(strategy, source, data, labelable, size, dist, cfg.SEED + trial, cfg)
    return choose


class LinearProbe(nn.Module):
    """A linear classifier on fixed embeddings (the inputs are the embeddings): ``ModelOutput(logits =
    W e + b, features = e)``, so the strategies that read the penultimate features (BADGE's gradient
    embedding, k-center) see the embeddings."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.fc = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        x = x.flatten(1)
        return ModelOutput(self.fc(x), x)


class EmbeddingRows(torch.utils.data.Dataset):
    """A split of the data as its embeddings: batches of ``(rows [B, D], labels, indices)``."""

    def __init__(self, source: FeatureSource, targets: torch.Tensor, test: bool = False):
        self.source, self.targets, self.test = source, targets, test

    def __len__(self) -> int:
        return len(self.targets)

    def __getitems__(self, indices):
        indices = torch.as_tensor(indices, dtype=torch.long)
        return self.source.rows(indices.numpy(), self.test), self.targets[indices], indices


class Standardise(nn.Module):
    """The linear mode's transform: embeddings standardised with the pool's mean and std per dimension."""

    size = None

    def __init__(self, train: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", train.mean(0, keepdim=True))
        self.register_buffer("std", train.std(0, keepdim=True).clamp_min(1e-6))

    def forward(self, rows: torch.Tensor) -> torch.Tensor:
        return (rows.float() - self.mean) / self.std


def embedding_data(data, source: FeatureSource):
    """``data`` with the images replaced by ``source``'s embeddings (standardised), for the linear mode;
    without the test images' embeddings (a ``file:`` source) no test set."""
    import dataclasses

    standardise = Standardise(source.train)
    test_idx = data.test_idx if source.test is not None else data.test_idx[:0]
    return dataclasses.replace(
        data, train=EmbeddingRows(source, data.train.targets), test=EmbeddingRows(source, data.test.targets, True),
        in_channels=source.dim, image_size=1, train_transform=standardise, eval_transform=standardise,
        test_idx=test_idx, decoded=True)

