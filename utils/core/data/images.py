"""Reading images safely (a decompression bomb is refused with one line) and the two kinds of image
datasets: :class:`TensorImages` (one uint8 tensor in memory) and :class:`FileImages` (image files,
decoded once into memory when they fit)."""

import threading
import warnings

import numpy as np
import torch
from torch.utils.data import Dataset

from utils.core.errors import UserError, one_line

CACHE_BYTES = 8 * 2**30  # decoded image files are kept in memory up to this size


_OPEN_LOCK = threading.Lock()  # warnings.catch_warnings is process-wide: one Image.open at a time under it


def open_image(path: str):
    """``PIL.Image.open(path)`` (the header only: pixels are decoded later), refusing with one line
    an image of more pixels than PIL's decompression-bomb limit (``PIL.Image.MAX_IMAGE_PIXELS``).
    PIL raises only above twice the limit and merely warns between; here both are refused the
    same way, with no Python warning printed."""
    from PIL import Image

    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise UserError(_bomb_message(path, exc)) from None
    limit = Image.MAX_IMAGE_PIXELS
    if limit and img.width * img.height > limit:
        img.close()
        raise UserError(_bomb_message(path, img.size))
    return img


def _bomb_message(path: str, size) -> str:
    """The refusal of image ``path``: ``size`` is its (width, height), or the DecompressionBombError
    PIL raised for it (whose message gives the pixel count: "Image size (N pixels) exceeds ...")."""
    from PIL import Image

    if isinstance(size, BaseException):
        shown = str(size).partition("(")[2].partition(" ")[0] or "too many"
    else:
        shown = f"{size[0]}x{size[1]}"
    limit = f" ({Image.MAX_IMAGE_PIXELS:,} pixels)" if Image.MAX_IMAGE_PIXELS else ""
    return (f"image {one_line(path)} is {one_line(shown)} pixels, over PIL's decompression-bomb limit{limit}; "
            "shrink it or remove it")


class TensorImages(Dataset):
    """Images held in memory as one uint8 tensor ``[N, C, H, W]``; batches are one gather."""

    def __init__(self, images, targets):
        self.images = images
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.long)

    def __len__(self):
        return len(self.targets)

    def __getitems__(self, indices):
        indices = torch.as_tensor(indices, dtype=torch.long)
        return self.images[indices], self.targets[indices], indices


class FileImages(Dataset):
    """Images read from files: RGB, resized to ``resize`` x ``resize``, then centre-cropped to
    ``crop`` (both ``None`` = keep the file's size, which must then match). Each image is decoded
    once: :meth:`decode` fills one uint8 tensor with the images in use when they take at most
    ``cache_bytes`` (the default budget suits every supported dataset at its default size); images
    outside it are decoded on demand and kept too."""

    def __init__(self, paths: list, targets, resize: int | None = None, crop: int | None = None,
                 cache_bytes: int = CACHE_BYTES):
        self.paths = list(paths)
        self.targets = torch.as_tensor(np.asarray(targets), dtype=torch.long)
        self.resize, self.crop = resize, crop or resize
        self.cache_bytes = cache_bytes
        self.cache, self.decoded = None, torch.zeros(len(self.paths), dtype=torch.bool)

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, i: int) -> torch.Tensor:
        """Image ``i`` decoded from its file, ``[3, H, W]`` uint8."""
        from PIL import Image

        path = self.paths[i]
        try:
            with open_image(path) as img:
                img = img.convert("RGB")
                if self.resize:
                    img = img.resize((self.resize, self.resize), Image.BILINEAR)
                array = np.asarray(img, dtype=np.uint8)
        except Image.DecompressionBombError as exc:  # a frame or tile over the limit, found while decoding
            raise UserError(_bomb_message(path, exc)) from None
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot read image {one_line(path)}: {one_line(exc)}; fix or remove the file") from None
        image = torch.from_numpy(array.copy()).permute(2, 0, 1)
        if self.crop and self.crop != image.shape[-1]:
            top = (image.shape[-2] - self.crop) // 2
            left = (image.shape[-1] - self.crop) // 2
            image = image[:, top:top + self.crop, left:left + self.crop]
        return image

    def verify(self, i: int) -> None:
        """Check that image ``i`` opens as an image (its header; no full decode)."""
        path = self.paths[i]
        try:
            with open_image(path) as img:
                img.verify()
        except (OSError, ValueError, SyntaxError) as exc:
            raise UserError(f"cannot read image {one_line(path)}: {one_line(exc)}; fix or remove the file") from None

    def decode(self, indices, threads: int = 1) -> bool:
        """Decode the images ``indices`` now, in ``threads`` threads (PIL decodes without the
        GIL), into the cache when all of this dataset's images fit in ``cache_bytes``; otherwise
        only check that each opens. Returns whether they are cached. An unreadable file stops
        with its name, before anything is written."""
        from concurrent.futures import ThreadPoolExecutor

        todo = np.unique(np.asarray(indices, dtype=np.int64))
        if not len(todo):
            return False
        with ThreadPoolExecutor(max(1, threads)) as pool:
            if not self._cache_fits(int(todo[0])):
                list(pool.map(self.verify, todo.tolist()))
                return False
            todo = todo[~self.decoded[todo].numpy()]
            shape = self.cache.shape[1:]
            for i, image in zip(todo.tolist(), pool.map(self.load, todo.tolist())):
                if image.shape != shape:
                    raise UserError(f"image {self.paths[i]} is {tuple(image.shape[1:])} pixels, the others "
                                    f"{tuple(shape[1:])}: set IMAGE_SIZE to resize them all")
                self.cache[i], self.decoded[i] = image, True
        return True

    def _cache_fits(self, i: int) -> bool:
        """Whether every image fits in ``cache_bytes`` (judged from image ``i``); the first time it
        does, the cache is allocated, holding image ``i``."""
        if self.cache is None:
            first = self.load(i)
            if len(self.paths) * first.numel() > self.cache_bytes:
                return False
            self.cache = torch.empty((len(self.paths), *first.shape), dtype=torch.uint8)
            self.cache[i], self.decoded[i] = first, True
        return True

    def __getitems__(self, indices):
        indices = torch.as_tensor(indices, dtype=torch.long)
        if not len(indices) or not self._cache_fits(int(indices[0])):
            return torch.stack([self.load(int(i)) for i in indices]), self.targets[indices], indices
        for i in indices[~self.decoded[indices]].unique().tolist():
            self.cache[i], self.decoded[i] = self.load(i), True
        return self.cache[indices], self.targets[indices], indices
