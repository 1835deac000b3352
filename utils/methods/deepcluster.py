"""DeepCluster unsupervised pre-training (Caron et al., ECCV'18), the "+PRE" of Rethinking deep AL.

Every epoch: embed the whole pool, PCA-whiten and L2-normalise the embeddings, cluster them with
k-means into k = 5 C groups, use the cluster ids as labels, re-initialise the classifier head, and
train one epoch of cross-entropy with the clusters sampled uniformly (every cluster contributes
equally many images, Sec. 3.4 "avoiding trivial solutions").

The trunk is saved with its provenance (the data and settings it was trained with), and loaded
only where they match; the seed's released weights (its ``models/pretrained/*.pickle``) load too.
"""

import collections
import io
import pickle
import re
import warnings

import numpy as np
import torch
from torch import nn

from utils.core import distributed
from utils.core.data import AllowListUnpickler, RefusedGlobal, make_loader
from utils.core.errors import UserError
from utils.core.results import atomic_write, load_tensors
from utils.core.train import predict, train_one_epoch

CLUSTERS_PER_CLASS = 5
KMEANS_ITERATIONS = 20
PCA_POWER = -0.5  # whitening


def pca_whiten(features, dim=None, power=PCA_POWER):
    """Project centred features on their top ``dim`` principal directions, scale direction i by
    eigenvalue_i^power (whitening at -0.5), then L2-normalise the rows."""
    x = np.asarray(features, dtype=np.float64)
    x = x - x.mean(axis=0)
    eigvals, eigvecs = np.linalg.eigh(x.T @ x / max(1, len(x) - 1))
    order = np.argsort(eigvals)[::-1][: dim or x.shape[1]]
    scale = np.maximum(eigvals[order], 1e-12) ** power
    projected = (x @ eigvecs[:, order]) * scale
    projected /= np.maximum(np.linalg.norm(projected, axis=1, keepdims=True), 1e-12)
    return projected.astype(np.float32)


def cluster_assignments(features, clusters, seed=0, iterations=KMEANS_ITERATIONS):
    """k-means (faiss) cluster id of every row of the whitened ``features``."""
    import faiss

    points = np.ascontiguousarray(pca_whiten(features))
    kmeans = faiss.Kmeans(points.shape[1], clusters, niter=iterations, seed=seed % 2**31, verbose=False,
                          min_points_per_centroid=1, max_points_per_centroid=1_000_000)
    kmeans.train(points)
    _, assigned = kmeans.index.search(points, 1)
    return assigned[:, 0]


def uniform_over_clusters(labels, count, rng):
    """``count`` indices (positions into ``labels``) drawn so that every non-empty cluster gives
    the same number, with replacement inside a cluster only when it is too small."""
    clusters = np.unique(labels)
    per_cluster = -(-count // len(clusters))
    order = np.argsort(labels, kind="stable")
    starts = np.searchsorted(labels[order], clusters)
    sizes = np.bincount(labels, minlength=labels.max() + 1)[clusters]
    offsets = np.concatenate([rng.permutation(per_cluster) % size if size >= per_cluster
                              else rng.integers(0, size, per_cluster) for size in sizes])
    picks = order[np.repeat(starts, per_cluster) + offsets]
    return rng.permutation(picks)[:count]


def pretrain(model, data, indices, num_classes, epochs, batch_size, lr, dist, run, seed=0, workers=0):
    """DeepCluster on ``indices`` of ``data.train`` for ``epochs`` epochs; the model's head is
    replaced by one with 5 C outputs, re-created after every clustering. Returns the model."""
    clusters = CLUSTERS_PER_CLASS * num_classes
    rng = np.random.default_rng(seed)
    indices = np.asarray(indices)
    bar = run.progress(range(epochs), "deepcluster")
    for epoch in bar:
        features = predict(model, data, indices, lambda out, _y: out.features.float(), batch_size, dist, workers,
                           desc="deepcluster")
        labels = cluster_assignments(features.numpy(), clusters, seed=seed + epoch)
        model.reset_heads(clusters)
        model.to(dist.device)
        cluster_of = torch.full((len(data.train),), -1, dtype=torch.long)
        cluster_of[torch.as_tensor(indices)] = torch.as_tensor(labels, dtype=torch.long)
        chosen = indices[uniform_over_clusters(labels, len(indices), rng)]
        net = distributed.wrap(model, dist)
        optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9, weight_decay=1e-5)
        net.train()
        loader = make_loader(data.train, chosen, batch_size, dist=dist, workers=workers)
        total, batches = train_one_epoch(loader, cluster_step(net, optimizer, cluster_of, data, dist), run, bar,
                                         epoch, optimizer)
        run.log_epoch(bar, "deepcluster", epoch, total / max(batches, 1), lr)
    return model


def cluster_step(net: nn.Module, optimizer: torch.optim.Optimizer, cluster_of: torch.Tensor, data, dist):
    """A training step on the clusters as labels (``cluster_of``: every training image's cluster)."""
    def step(batch):
        logits = net(data.train_transform(batch.images.to(dist.device))).logits
        loss = nn.functional.cross_entropy(logits, cluster_of[batch.indices].to(dist.device))
        optimizer.zero_grad(set_to_none=True)
        dist.precision.minimize(loss, optimizer)
        return loss.detach()
    return step


def trunk_state(model: nn.Module) -> dict:
    """Every weight of ``model`` except its heads (``model.HEADS``)."""
    heads = tuple(h + "." for h in model.HEADS)
    return {k: v for k, v in model.state_dict().items() if not k.startswith(heads)}


def save_trunk(model: nn.Module, path: str, provenance: dict) -> None:
    """Save the trunk of ``model`` with its ``provenance`` (what read_trunk checks), atomically."""
    record = {"provenance": provenance, "trunk": trunk_state(model)}
    atomic_write(path, lambda fh: torch.save(record, fh))


def read_trunk(path: str, provenance: dict, model: nn.Module) -> dict:
    """The trunk weights in ``path``, checked to fit ``model``: a file of save_trunk whose provenance
    is ``provenance``, or the seed's released weights (seed_weights_name), which record none."""
    state = _read_weights_file(path)
    if any(_SEED_KEY.fullmatch(k) for k in state):
        trunk = from_seed_layout(state)
    else:
        _check_provenance(path, state.get("provenance"), provenance)
        trunk = state["trunk"] if _is_named(state.get("trunk")) else {}
    _check_fits(path, trunk, model)
    return trunk


def load_trunk(model: nn.Module, trunk: dict) -> nn.Module:
    """Overwrite every weight of ``model`` but its heads with ``trunk`` (of read_trunk)."""
    model.load_state_dict(trunk, strict=False)
    return model


# ----------------------------------------------------------------------------- the seed's weights files

SEED_WEIGHTS = "pretrained_{}_cifar_cnn_lr0.02_batch_128_final.pickle"  # its models/pretrained/
SEED_WEIGHTS_DATASET = {"cifar10": "cifar", "cifar100": "cifar", "svhn": "svhn", "mnist": "mnist"}
_SEED_KEY = re.compile(r"(?:module\.)?(conv|bn)([1-3])([abc])\.(\w+)")  # conv1a.weight_g, bn3c.running_var, ...
_SEED_HEAD = re.compile(r"(?:module\.)?fc[12]\.")
_WEIGHT_NORM = {"weight_g": "parametrizations.weight.original0", "weight_v": "parametrizations.weight.original1"}
_LEGACY_TORCH_HEAD = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)  # how torch.save's old format starts
_RETRAIN = "train them again with --learn-unsupervised-pretraining True"


def seed_weights_name(dataset: str, arch: str) -> str | None:
    """The name of the seed's released DeepCluster weights for ``dataset`` (``cifar_cnn`` only;
    one CIFAR file for CIFAR-10 and CIFAR-100, as the seed), None when it released none."""
    if arch != "cifar_cnn" or dataset not in SEED_WEIGHTS_DATASET:
        return None
    return SEED_WEIGHTS.format(SEED_WEIGHTS_DATASET[dataset])


def from_seed_layout(state: dict) -> dict:
    """The seed's ``cifar_cnn`` state dict in our names: DataParallel's ``module.`` dropped,
    ``conv1a``, ``bn1a``, ``conv1b``, ... ``bn3c`` as ``block1.0``, ``block1.1``, ``block1.3``, ...
    ``block3.7``, the old-style weight norm ``weight_g``/``weight_v`` as the parametrization's
    ``original0``/``original1``; its heads fc1 and fc2 are left out, other keys kept as they are."""
    trunk = {}
    for key, value in state.items():
        match = _SEED_KEY.fullmatch(key)
        if match:
            kind, block, layer, name = match.groups()
            key = f"block{block}.{3 * 'abc'.index(layer) + (kind == 'bn')}.{_WEIGHT_NORM.get(name, name)}"
        elif _SEED_HEAD.match(key):
            continue
        trunk[key] = value
    return trunk




def _storage_from_bytes(data: bytes):
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def _read_weights_file(path: str) -> dict:
    """A torch.save'd file (load_tensors), or a pickle.dump'd one as the seed writes them."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_LEGACY_TORCH_HEAD))
    except OSError as exc:
        raise UserError(f"cannot read DeepCluster weights {path} ({exc.strerror or exc}); {_RETRAIN}") from None
    if head.startswith(b"PK\x03\x04") or head == _LEGACY_TORCH_HEAD:  # torch.save's zip file, or its old format
        state = load_tensors(path, "DeepCluster weights", _RETRAIN)
    else:
        state = _read_pickle(path)
    if not _is_named(state):
        raise UserError(f"DeepCluster weights {path} hold a {type(state).__name__}, not named weights; {_RETRAIN}")
    return state


def _is_named(obj) -> bool:
    return isinstance(obj, dict) and all(isinstance(k, str) for k in obj)


def _read_pickle(path: str):
    """What ``pickle.dump`` made of a state dict (how the seed saved its weights), read without
    running code: the only globals allowed rebuild tensors, whose storages ``torch.load`` reads
    with ``weights_only`` (on the CPU: the seed's were on the GPU)."""
    allowed = {("collections", "OrderedDict"): collections.OrderedDict,
               ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
               ("torch.storage", "_load_from_bytes"): _storage_from_bytes}
    try:
        with open(path, "rb") as fh, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return AllowListUnpickler(fh, allowed).load()
    except RefusedGlobal as exc:
        raise UserError(f"DeepCluster weights {path} is unreadable or corrupt (it names {exc.args[0]}, which does "
                        f"not rebuild a tensor); {_RETRAIN}") from None
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise UserError(f"DeepCluster weights {path} is unreadable or corrupt ({reason}); {_RETRAIN}") from None


def _check_provenance(path: str, recorded: dict | None, expected: dict) -> None:
    if not isinstance(recorded, dict):
        raise UserError(f"DeepCluster weights {path} do not record how they were trained (saved by an older "
                        f"version): {_RETRAIN}")
    differs = [f"{key} {recorded.get(key)!r} there, {value!r} here" for key, value in expected.items()
               if recorded.get(key) != value]
    if differs:
        raise UserError(f"DeepCluster weights {path} were trained otherwise ({'; '.join(differs)}): train them for "
                        "this run with --learn-unsupervised-pretraining True, or run with the settings they record")


def _check_fits(path: str, trunk: dict, model: nn.Module) -> None:
    """Every weight of ``trunk`` is one of ``model``'s, of the same shape, and every trunk weight of
    ``model`` is there (BatchNorm's num_batches_tracked may be missing: older PyTorch had none)."""
    own = trunk_state(model)
    problems = [f"this model has no {k}" for k in trunk if k not in own]
    problems += [f"{k} is {_shape(v)} there, {_shape(own[k])} here" for k, v in trunk.items()
                 if k in own and _shape(v) != _shape(own[k])]
    problems += [f"it lacks {k}" for k in own if k not in trunk and not k.endswith("num_batches_tracked")]
    if problems:
        raise UserError(f"DeepCluster weights {path} do not fit this model ({problems[0]}; another --arch or "
                        "dataset?): train them for it with --learn-unsupervised-pretraining True")


def _shape(value) -> str:
    return str(list(value.shape)) if isinstance(value, torch.Tensor) else f"a {type(value).__name__}"
