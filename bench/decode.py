"""Decoding image files (folder:PATH, caltech101, tinyimagenet, own images): the one decode pass
into memory (utils/core/data/images.py's FileImages.decode) in 1 and in all threads, against decoding every
batch from the files (what an epoch cost before the cache), and a pass over the cached images.

    python bench/decode.py                 # 4,000 JPEG files of 256x256 -> 64x64 (a minute on 2 cores)
    python bench/decode.py --n 20000 --side 500 --size 128
"""

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from utils.core.data import FileImages, make_loader  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="image files")
    parser.add_argument("--side", type=int, default=256, help="side of the files")
    parser.add_argument("--size", type=int, default=64, help="IMAGE_SIZE they are decoded to")
    args = parser.parse_args()
    from PIL import Image

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        paths = []
        smooth = rng.integers(0, 256, (args.side // 8, args.side // 8, 3), dtype=np.uint8)
        for i in range(args.n):
            path = os.path.join(folder, f"{i:06d}.jpg")
            tile = np.roll(smooth, i, axis=0).repeat(8, 0).repeat(8, 1)
            Image.fromarray(tile).save(path, quality=90)
            paths.append(path)
        labels = np.zeros(args.n, dtype=np.int64)
        cores = os.cpu_count() or 1
        print(f"{args.n} JPEG files of {args.side}x{args.side} -> {args.size}x{args.size}, {cores} cores")

        uncached = FileImages(paths, labels, resize=args.size, cache_bytes=0)
        start = time.perf_counter()
        for _ in make_loader(uncached, np.arange(args.n), 256):
            pass
        per_epoch = time.perf_counter() - start
        print(f"decoding every batch from the files (no cache): {per_epoch:.1f} s per pass "
              f"({args.n / per_epoch:.0f} images/s)")
        for threads in sorted({1, cores}):
            images = FileImages(paths, labels, resize=args.size)
            start = time.perf_counter()
            images.decode(np.arange(args.n), threads)
            once = time.perf_counter() - start
            print(f"the one decode pass, {threads} thread(s): {once:.1f} s ({args.n / once:.0f} images/s)")
        start = time.perf_counter()
        for _ in make_loader(images, np.arange(args.n), 256, shuffle=True):
            pass
        print(f"a shuffled pass over the cached images: {time.perf_counter() - start:.3f} s")


if __name__ == "__main__":
    main()
