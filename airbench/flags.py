"""The loader's run flags and the ranges of the hyp leaves it reads: FLAGS, which a script passes to parse_flags."""
from airbench.augment import FLIPS
from common.errors import UserError
from common.flags import Flag, Flags, Range, one_of

TRAIN_IMAGES = 50_000


def check_subset(subset):
    if subset < 0:
        raise UserError(f'--subset must be >= 0 (0: all images), got {subset}')


def check_subset_holds_a_batch(hyp, args):
    """Training drops the last partial batch, so a subset below one batch would train on nothing."""
    batch_size = hyp.get('opt', {}).get('batch_size')
    train_images = min(args.subset or TRAIN_IMAGES, TRAIN_IMAGES)
    if batch_size and batch_size > train_images:
        raise UserError(f'the training set ({train_images:,} images) must hold at least one batch of {batch_size:,}: '
                        f'lower --batch-size' + (' or raise --subset' if args.subset else ''))


FLAGS = Flags('data (airbench/)', run={
    'data_dir': Flag(None, 'folder with CIFAR-10 (binary or python layout, or a cache); default $CIFAR10_DIR, else '
                           'the cache, else a torchvision download: offline, this flag (or $CIFAR10_DIR) is needed'),
    'subset': Flag(0, 'use only the first N training and test images (0: all); for quick CPU checks', check_subset),
}, ranges={
    'flip': one_of(*FLIPS),
    'translate': Range(lambda v: 0 <= v < 32, 'in 0..31 (reflect padding needs it below the image size)'),
    'cutout': Range(lambda v: 0 <= v <= 32, 'in 0..32'),
}, check=check_subset_holds_a_batch)
