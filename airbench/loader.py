"""CifarLoader: the whole uint8 dataset kept on the device, normalized and augmented one run at a time.

Batches are in channels_last memory order, in `dtype`: by default fp16 on CUDA and fp32 on the CPU; a script
passes the one its weights need (common/precision.py input_dtype). No worker processes and no per-batch CPU
work. As in airbench94's loader, the first epoch after reseed() normalizes and reflect-pads the whole set once,
inside the run's timer, and the run keeps it; unlike it, each batch is then one gather from that set that crops,
flips and shuffles together (airbench/augment.py), so an epoch reads and writes each image once instead of once per step.
"""
import copy

import torch

from airbench.augment import (FLIPS, alternating_flip_mask, batch_crop, batch_cutout_, crop_windows,
                                  pad_and_mirror, random_flip_mask, random_offsets, random_squares, window_columns)
from airbench.data import load_cifar10
from common.errors import UserError

# Channel statistics of the 50,000 training images (pixel / 255), as published with the dataset.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class CifarLoader:
    """train=True shuffles each epoch and drops the last partial batch (a test loader does neither); flip,
    translate and cutout augment training batches (airbench/augment.py). reseed(seed) starts a run."""

    def __init__(self, images, labels, batch_size, device, train=False, flip='none', translate=0, cutout=0,
                 dtype=None):
        if flip not in FLIPS:
            raise UserError(f"flip must be one of {', '.join(FLIPS)}, got '{flip}'")
        self.device = torch.device(device)
        self.dtype = dtype or (torch.float16 if self.device.type == 'cuda' else torch.float32)
        # uint8 NHWC in memory, seen as NCHW: that is exactly the channels_last layout the convs want.
        self.images = images.to(self.device).permute(0, 3, 1, 2)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.flip, self.translate, self.cutout = flip, translate, cutout
        self.train = train
        self.max_value = torch.tensor(255.0, device=self.device)
        self.mean = torch.tensor(CIFAR_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(CIFAR_STD, device=self.device).view(1, 3, 1, 1)
        # The run's normalized, padded set. A twin from with_labels shares this dict: the set depends on the
        # images alone, so twins hold one copy between them, never one each; either's reseed drops it for
        # both, which costs the other at most a recompute of the same values.
        self.kept = {}
        self.reseed(0)

    def with_labels(self, labels):
        """A loader over the same images (shared on the device, not copied) with other labels, e.g. the random
        labels of a warm-up run. Making it computes nothing and leaves this loader's state as it is."""
        if len(labels) != len(self.labels):
            raise ValueError(f'{len(labels)} labels for {len(self.labels)} images')
        twin = copy.copy(self)
        twin.labels = labels.to(self.device)
        twin.restart(0)
        return twin

    def reseed(self, seed):
        """Starts a run: epoch 0, a fresh generator (same seed, same batches on the same device), and the kept
        set dropped, so the run's first epoch normalizes and pads again inside its timer, as airbench's does."""
        self.kept.clear()
        self.restart(seed)

    def restart(self, seed):
        """Epoch 0 and a fresh generator; the kept set stays."""
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.epoch = 0
        self.base_flip_mask = None

    def normalize(self, images):
        # In float32, rounded once to fp16 at the end (dividing in fp16 first rounds twice). By a tensor, not the
        # number 255: CUDA divides by a Python scalar as a multiply by its reciprocal, off by one bit from the CPU.
        return ((images.float() / self.max_value - self.mean) / self.std).to(self.dtype)

    def __len__(self):
        n, bs = len(self.images), self.batch_size
        return n // bs if self.train else (n + bs - 1) // bs

    def kept_windows(self):
        """Every crop window of the run's normalized, padded (and, to flip, mirrored) set; made on first use.
        The mirror copy doubles the set (fp16, 50,000 images, translate 2: 778 MB); airbench94 keeps 1 GB in its
        normalized, flipped and padded copies."""
        if 'windows' not in self.kept:
            kept = pad_and_mirror(self.normalize(self.images).permute(0, 2, 3, 1), self.translate, self.flip != 'none')
            self.kept['windows'] = crop_windows(kept, *self.images.shape[2:])
        return self.kept['windows']

    def flip_mask(self, order):
        """Whether each image, in batch order, is seen mirrored this epoch."""
        n = len(order)
        if self.flip == 'alternating':
            if self.base_flip_mask is None:
                self.base_flip_mask = random_flip_mask(n, self.generator)
            return alternating_flip_mask(self.base_flip_mask, self.epoch)[order]
        if self.flip == 'random':
            return random_flip_mask(n, self.generator)
        return torch.zeros(n, dtype=torch.bool, device=self.device)

    def plan_epoch(self):
        """One epoch's random choices in batch order: dataset index, crop row and column, cutout square.
        Offsets and squares are drawn per batch position; being i.i.d., they need no reordering."""
        n, (h, w) = len(self.images), self.images.shape[2:]
        order = (torch.randperm(n, device=self.device, generator=self.generator) if self.train
                 else torch.arange(n, device=self.device))
        flip = self.flip_mask(order)
        dy, dx = (random_offsets(n, self.translate, self.generator) if self.translate
                  else torch.zeros(2, n, dtype=torch.long, device=self.device))
        squares = random_squares(n, h, w, self.cutout, self.generator) if self.cutout else None
        return order, dy, window_columns(dx, flip, w + 2 * self.translate), squares

    def __iter__(self):
        windows = self.kept_windows()
        order, dy, x0, squares = self.plan_epoch()
        for i in range(len(self)):
            part = slice(i * self.batch_size, (i + 1) * self.batch_size)
            images = batch_crop(windows, order[part], dy[part], x0[part])
            if squares is not None:
                batch_cutout_(images, squares[0][part], squares[1][part])
            yield images, self.labels[order[part]]
        self.epoch += 1


def load_data(args):
    """The train and test splits as CPU tensors, cut to the first `--subset` images of each if set."""
    data = load_cifar10(args.data_dir)
    if args.subset:
        data = {split: (images[:args.subset], labels[:args.subset]) for split, (images, labels) in data.items()}
    return data
