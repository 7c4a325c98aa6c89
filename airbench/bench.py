"""Benchmark (not a test): CifarLoader's epochs against the augmentation it replaced, in images/s and bytes moved.

python -m airbench.bench [--data-dir DIR] [--epochs 10] [--translate 2] [--cutout 0] [--flip alternating]
                                [--batch-size 1024] [--subset 0]

Both sides run in one process, on one device, over the same training images (all 50,000 unless --subset):
ReferenceLoader (below: the augmentation before the gather, whose normalized set is made at creation and whose
epochs make a flipped copy, a padded copy, 4*translate torch.where passes to crop, a cutout pass and a gather
per batch) and CifarLoader (the run's padded set made in the first epoch after reseed, then one gather per
batch). Each gets an untimed warm-up epoch (allocator, kernels), a reseed, its first epoch timed alone
(CifarLoader's per-run normalize and pad fall there, as in a rung's timer), then --epochs epochs timed
together: CUDA events on a GPU, the wall clock on the CPU. Without a GPU it runs on the CPU and says so.

Bytes are counted by ByteCounter over one untimed epoch of each kind. They are logical bytes: per aten op, the
distinct elements of its outputs (written) and of its tensor arguments (read; a gather's source only as the
elements it fetches; views move nothing). They are not cache-aware: an L2 hit counts like DRAM traffic, and a
fused kernel would move less. The row is appended to results/bench/loader__<device>.jsonl.
"""
import argparse
import math

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from airbench.augment import alternating_flip_mask, random_flip_mask, random_squares
from common.errors import install_excepthook
from common.flags import Parser, check_ranges
from airbench.flags import FLAGS
from airbench.loader import CifarLoader, load_data
from common.table import Timer

aten = torch.ops.aten
# Ops whose first argument is read only where the output points: they fetch one source element per output
# element, not the whole source (a batch gathered from the epoch reads a batch, not the epoch).
GATHERS = {aten.index.Tensor, aten.index_select.default, aten.gather.default}
# Ops that allocate or re-label memory without reading or writing its contents.
NO_TRAFFIC = {aten.empty.memory_format, aten.empty_strided.default, aten.empty_like.default, aten._unsafe_view.default}

#############################################
#        Reference: the old augmentation    #
#############################################

def reference_flip_lr(images, flip_mask):
    return torch.where(flip_mask.view(-1, 1, 1, 1), images.flip(-1), images)


def reference_translate(images, pad, generator):
    """Reflect-pad, then choose each image's row shift and column shift among the 2*pad+1 shifted views of the
    whole batch with torch.where: 4*pad full passes after the pad."""
    if pad == 0:
        return images
    n, _, h, w = images.shape
    padded = F.pad(images, (pad,) * 4, mode='reflect')
    offsets = torch.randint(0, 2 * pad + 1, (2, n, 1, 1, 1), device=generator.device, generator=generator)
    rows = padded[:, :, :h, :]
    for dy in range(1, 2 * pad + 1):
        rows = torch.where(offsets[0] == dy, padded[:, :, dy:dy + h, :], rows)
    out = rows[:, :, :, :w]
    for dx in range(1, 2 * pad + 1):
        out = torch.where(offsets[1] == dx, rows[:, :, :, dx:dx + w], out)
    return out.contiguous(memory_format=torch.channels_last)


def reference_cutout(images, size, generator):
    if size == 0:
        return images
    in_rows, in_cols = random_squares(len(images), *images.shape[2:], size, generator)
    square = in_rows[:, :, None] & in_cols[:, None, :]
    return images.masked_fill(square[:, None], 0).contiguous(memory_format=torch.channels_last)


class ReferenceLoader:
    """The epochs of CifarLoader before the gather (git 1e195fc), over the same images and settings."""

    def __init__(self, loader):
        self.loader, self.device, self.batch_size = loader, loader.device, loader.batch_size
        self.normalized_images = loader.normalize(loader.images)  # once, at creation: untimed in the rungs
        self.reseed(0)

    def reseed(self, seed):
        self.generator = torch.Generator(self.loader.device).manual_seed(seed)
        self.epoch, self.base_flip_mask = 0, None

    def __len__(self):
        return len(self.loader)

    def augmented_epoch(self):
        images, loader = self.normalized_images, self.loader
        if loader.flip == 'alternating':
            if self.base_flip_mask is None:
                self.base_flip_mask = random_flip_mask(len(images), self.generator)
            images = reference_flip_lr(images, alternating_flip_mask(self.base_flip_mask, self.epoch))
        elif loader.flip == 'random':
            images = reference_flip_lr(images, random_flip_mask(len(images), self.generator))
        images = reference_translate(images, loader.translate, self.generator)
        return reference_cutout(images, loader.cutout, self.generator)

    def __iter__(self):
        images, bs = self.augmented_epoch(), self.batch_size
        order = torch.randperm(len(images), device=self.device, generator=self.generator)
        for i in range(len(self)):
            index = order[i * bs:(i + 1) * bs]
            yield images[index], self.loader.labels[index]
        self.epoch += 1

#############################################
#              Counting bytes               #
#############################################

def addressed_bytes(tensor):
    """Bytes of the distinct elements a tensor addresses: a broadcast (stride-0) dimension counts once, and an
    overlapping view at most its storage."""
    elements = math.prod(size for size, stride in zip(tensor.shape, tensor.stride()) if stride != 0)
    return min(elements * tensor.element_size(), tensor.untyped_storage().nbytes())


def tensors(tree):
    return [leaf for leaf in tree_leaves(tree) if isinstance(leaf, torch.Tensor)]


class ByteCounter(TorchDispatchMode):
    """Sums, over every aten op run inside `with ByteCounter() as counter:`, the bytes it writes (its outputs)
    and reads (its tensor arguments; a gather's source as the elements it fetches). Views move nothing."""

    def __init__(self):
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view and func not in NO_TRAFFIC:
            written = sum(addressed_bytes(t) for t in tensors(out))
            inputs = tensors((args[1:], kwargs)) if func in GATHERS else tensors((args, kwargs))
            self.bytes += written * (2 if func in GATHERS else 1) + sum(addressed_bytes(t) for t in inputs)
        return out

#############################################
#                 Measuring                 #
#############################################

def run_epoch(loader):
    for _ in loader:
        pass


def time_epochs(loader, epochs):
    """Seconds of the first epoch after reseed (a run's one-off work included) and of the `epochs` after it."""
    loader.reseed(0)
    run_epoch(loader)  # warm-up epoch: allocator, kernels
    loader.reseed(0)
    first, later = Timer(loader.device), Timer(loader.device)
    with first:
        run_epoch(loader)
    with later:
        for _ in range(epochs):
            run_epoch(loader)
    return first.seconds, later.seconds


def count_bytes(loader):
    """Logical bytes of the first epoch after reseed and of the epoch after it."""
    loader.reseed(0)
    counts = []
    for _ in range(2):
        with ByteCounter() as counter:
            run_epoch(loader)
        counts.append(counter.bytes)
    return counts


def measure(loader, setup_bytes, epochs):
    first_seconds, seconds = time_epochs(loader, epochs)
    first_bytes, epoch_bytes = count_bytes(loader)
    images = epochs * len(loader) * loader.batch_size
    return dict(images_per_second=images / seconds, seconds=seconds, first_epoch_seconds=first_seconds,
                epoch_bytes=epoch_bytes, first_epoch_bytes=first_bytes, setup_bytes=setup_bytes)


#############################################
#                  Report                   #
#############################################

def in_megabytes(value):
    return f'{value / 1e6:,.0f}'


def in_seconds(value):
    return f'{value:.3f}'


# (measurement, column title, format): bytes in MB (10^6), times in seconds
COLUMNS = [('setup_bytes', 'setup MB', in_megabytes), ('first_epoch_bytes', 'first epoch MB', in_megabytes),
           ('epoch_bytes', 'epoch MB', in_megabytes), ('first_epoch_seconds', 'first epoch s', in_seconds),
           ('seconds', 'epochs s', in_seconds), ('images_per_second', 'images/s', lambda value: f'{value:,.0f}')]


def print_table(results):
    print(' ' * 16 + ''.join(f'{title:>16}' for _, title, _ in COLUMNS))
    for name, measured in results.items():
        print(f'{name:<16}' + ''.join(f'{fmt(measured[key]):>16}' for key, _, fmt in COLUMNS))
    old, new = results['reference (old)'], results['loader (new)']
    print(f"new/old: {new['epoch_bytes'] / old['epoch_bytes']:.2f}x the bytes per epoch, "
          f"{new['images_per_second'] / old['images_per_second']:.2f}x the images/s")


def build(images, labels, args, device):
    """Both loaders over the same device-resident images, with the bytes each moves when it is made."""
    images, labels = images.to(device), labels.to(device)  # the data load, outside the comparison
    with ByteCounter() as new_setup:
        loader = CifarLoader(images, labels, args.batch_size, device, train=True, flip=args.flip,
                             translate=args.translate, cutout=args.cutout)
    with ByteCounter() as old_setup:
        reference = ReferenceLoader(loader)
    return {'reference (old)': (reference, old_setup.bytes), 'loader (new)': (loader, new_setup.bytes)}


def main():
    install_excepthook()
    parser = Parser(prog='python -m airbench.bench', description=__doc__.splitlines()[0], allow_abbrev=False,
                    formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--data-dir', default=None,
                        help='a CIFAR-10 copy, as the rungs take it; unset: $CIFAR10_DIR, else the download cache')
    parser.add_argument('--epochs', type=int, default=10, help='epochs timed per loader')
    parser.add_argument('--batch-size', type=int, default=1024, help='images per batch')
    parser.add_argument('--flip', default='alternating', help="'none', 'random' or 'alternating'")
    parser.add_argument('--translate', type=int, default=2, help='pixels, reflect-padded')
    parser.add_argument('--cutout', type=int, default=0, help='side of the zeroed square, pixels (0: off)')
    parser.add_argument('--subset', type=int, default=0, help='only the first N training images (0: all 50,000)')
    parser.add_argument('--out', default='results', help='results folder: the result is appended to bench/ there')
    args = parser.parse_args()
    # the rungs' range checks (one-line errors), e.g. a translate past the image or a batch over 50,000
    check_ranges({'opt': {key: getattr(args, key) for key in ('epochs', 'batch_size')},
                  'aug': {key: getattr(args, key) for key in ('flip', 'translate', 'cutout')}}, args, [FLAGS])
    from stats.bench import check_bench_out, record_bench  # stats/ holds the log; the loader needs none of it
    check_bench_out(args.out)
    device = 'cuda' if torch.cuda.is_available() else 'cpu'
    images, labels = load_data(args)['train']
    loaders = build(images, labels, args, device)
    results = {name: measure(loader, setup_bytes, args.epochs) for name, (loader, setup_bytes) in loaders.items()}
    name = torch.cuda.get_device_name() if device == 'cuda' else 'CPU (no GPU found)'
    print(f'{name}: {len(images):,} images, batch {args.batch_size}, flip {args.flip}, translate {args.translate}, '
          f'cutout {args.cutout}; {args.epochs} timed epochs each after the first; logical bytes (see docstring)')
    print_table(results)
    settings = {key: getattr(args, key) for key in ('epochs', 'batch_size', 'flip', 'translate', 'cutout', 'subset')}
    measurements = {**results['loader (new)'], 'reference': results['reference (old)'],
                    'bytes': 'logical: aten-op reads + writes (airbench.bench.ByteCounter)'}
    print('appended to ' + str(record_bench('loader', device, measurements, settings, args.out)))


if __name__ == '__main__':
    main()
