"""CifarLoader: the whole uint8 dataset kept on the device, normalized and augmented one epoch at a time.

On CUDA batches are fp16 in channels_last memory order; on the CPU they are fp32, so every script and test
also runs here. No worker processes and no per-batch CPU work: an epoch is a few batched tensor ops and
then slices of one shuffled index.
"""
import copy

import torch

from airbench.augment import (FLIPS, alternating_flip_mask, batch_cutout, batch_flip_lr, batch_translate,
                              random_flip_mask)
from airbench.data import load_cifar10
from airbench.errors import UserError

# Channel statistics of the 50,000 training images (pixel / 255), as published with the dataset.
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


class CifarLoader:
    def __init__(self, images, labels, batch_size, device, train=False, flip='none', translate=0, cutout=0,
                 shuffle=None, drop_last=None, seed=0):
        if flip not in FLIPS:
            raise UserError(f"flip must be one of {', '.join(FLIPS)}, got '{flip}'")
        self.device = torch.device(device)
        self.dtype = torch.float16 if self.device.type == 'cuda' else torch.float32
        # uint8 NHWC in memory, seen as NCHW: that is exactly the channels_last layout the convs want.
        self.images = images.to(self.device).permute(0, 3, 1, 2)
        self.labels = labels.to(self.device)
        self.batch_size = batch_size
        self.flip, self.translate, self.cutout = flip, translate, cutout
        self.shuffle = train if shuffle is None else shuffle
        self.drop_last = train if drop_last is None else drop_last
        self.mean = torch.tensor(CIFAR_MEAN, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(CIFAR_STD, device=self.device).view(1, 3, 1, 1)
        # Made once, outside any timed run, then kept: epochs only flip, shift and cut it.
        self.normalized_images = self.normalize(self.images)
        self.reseed(seed)

    def with_labels(self, labels):
        """A loader over the same images (shared on the device, not copied) with other labels, e.g. the random
        labels of a warm-up run."""
        if len(labels) != len(self.labels):
            raise ValueError(f'{len(labels)} labels for {len(self.labels)} images')
        twin = copy.copy(self)
        twin.labels = labels.to(self.device)
        twin.reseed(0)
        return twin

    def reseed(self, seed):
        """Restarts at epoch 0 with a fresh generator: same seed, same batches (on the same device)."""
        self.generator = torch.Generator(self.device).manual_seed(seed)
        self.epoch = 0
        self.base_flip_mask = None

    def normalize(self, images):
        # in float32, rounded once to fp16 at the end (dividing in fp16 first rounds twice)
        return ((images.float() / 255 - self.mean) / self.std).to(self.dtype)

    def __len__(self):
        n, bs = len(self.images), self.batch_size
        return n // bs if self.drop_last else (n + bs - 1) // bs

    def augmented_epoch(self):
        images = self.normalized_images
        if self.flip == 'alternating':
            if self.base_flip_mask is None:
                self.base_flip_mask = random_flip_mask(len(images), self.generator)
            images = batch_flip_lr(images, alternating_flip_mask(self.base_flip_mask, self.epoch))
        elif self.flip == 'random':
            images = batch_flip_lr(images, random_flip_mask(len(images), self.generator))
        images = batch_translate(images, self.translate, self.generator)
        return batch_cutout(images, self.cutout, self.generator)

    def __iter__(self):
        images = self.augmented_epoch()
        n = len(images)
        order = (torch.randperm(n, device=self.device, generator=self.generator) if self.shuffle
                 else torch.arange(n, device=self.device))
        for i in range(len(self)):
            index = order[i * self.batch_size:(i + 1) * self.batch_size]
            yield images[index], self.labels[index]
        self.epoch += 1


def load_data(args):
    """The train and test splits as CPU tensors, cut to the first `--subset` images of each if set."""
    data = load_cifar10(args.data_dir)
    if args.subset:
        data = {split: (images[:args.subset], labels[:args.subset]) for split, (images, labels) in data.items()}
    return data
