"""The official CIFAR-10 batch files, binary (`data_batch_1.bin`) or python (`data_batch_1`) layout: reading
them into uint8 arrays, and refusing by name a file that is missing, unreadable, the wrong size, or of the right
size but holding no data (a copy that failed into zeros): every class present in a plausible share and almost
no constant images. airbench/data.py caches what they hold.
"""
import pickle

import numpy as np

from common.errors import UserError

TRAIN_FILES = [f'data_batch_{i}' for i in range(1, 6)]
TEST_FILE = 'test_batch'
IMAGES_PER_FILE = 10_000
RECORD_BYTES = 1 + 3 * 32 * 32  # binary layout: one label byte, then the red, green and blue planes
MIN_CLASS_SHARE = 0.05  # of a batch file's images, per class: half a balanced file's 10% (check_content)
MAX_CONSTANT_SHARE = 0.01  # of a batch file's images that may have every pixel equal; the official files have none
FIX_HINT = ('put the official CIFAR-10 binary version (cifar-10-batches-bin/) or python version '
            '(cifar-10-batches-py/) in a folder and pass --data-dir FOLDER or set CIFAR10_DIR')


def convert_folder(folder, suffix, read_file):
    parts = {}
    for split, names in [('train', TRAIN_FILES), ('test', [TEST_FILE])]:
        files = [folder / (name + suffix) for name in names]
        missing = [p.name for p in files if not p.exists()]
        if missing:
            raise UserError(f'{folder} lacks {", ".join(missing)}: expected all of '
                            f'{", ".join(n + suffix for n in TRAIN_FILES + [TEST_FILE])}; {FIX_HINT}')
        images, labels = zip(*[read_file(p) for p in files])
        parts[split] = (np.concatenate(images), np.concatenate(labels))
    return parts


def unreadable(path, exc):
    return UserError(f'cannot read {path} ({exc.strerror or type(exc).__name__}): it must be readable; '
                     f'check its permissions or copy it again')


def read_binary_file(path):
    try:
        raw = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise unreadable(path, exc) from None
    if raw.size != IMAGES_PER_FILE * RECORD_BYTES:
        raise UserError(f'{path} has {raw.size:,} bytes, expected {IMAGES_PER_FILE * RECORD_BYTES:,} '
                        f'({IMAGES_PER_FILE:,} records of {RECORD_BYTES} bytes): the file is truncated or '
                        f'not CIFAR-10; copy it again from the official archive')
    records = raw.reshape(IMAGES_PER_FILE, RECORD_BYTES)
    images = records[:, 1:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return check_labels(path, images, records[:, 0])


def read_python_file(path):
    try:
        f = open(path, 'rb')
    except OSError as exc:
        raise unreadable(path, exc) from None
    try:
        with f:
            batch = pickle.load(f, encoding='bytes')
        data, labels = np.asarray(batch[b'data']), np.asarray(batch[b'labels'])
    except Exception as exc:
        raise UserError(f'{path} is not a CIFAR-10 python batch ({type(exc).__name__}): '
                        f'copy it again from the official archive') from None
    if data.dtype != np.uint8 or data.shape != (IMAGES_PER_FILE, 3 * 32 * 32):
        raise UserError(f'{path} holds {data.dtype} data of shape {data.shape}, expected uint8 of shape '
                        f'({IMAGES_PER_FILE}, 3072): the file is truncated or not CIFAR-10')
    if labels.dtype.kind not in 'iu' or labels.shape != (IMAGES_PER_FILE,):
        raise UserError(f'{path} holds {labels.dtype} labels of shape {labels.shape}, expected {IMAGES_PER_FILE:,} '
                        f'whole numbers: the file is truncated or not CIFAR-10')
    return check_labels(path, data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels)


def check_labels(path, images, labels):
    if labels.min() < 0 or labels.max() > 9:
        raise UserError(f'{path} has labels outside 0..9 (found {labels.min()}..{labels.max()}): the file is '
                        f'corrupt or not CIFAR-10; copy it again from the official archive')
    check_content(path, images, labels)
    return np.ascontiguousarray(images), labels.astype(np.int64)


def check_content(path, images, labels, fix='copy it again from the official archive'):
    """A file of the right size can still hold no data: zeros from a failed copy train to "mean 0.00%" and would
    be cached. Each official batch file holds every class at 9.4-10.6% and no constant image."""
    flat = images.reshape(len(images), -1)
    constant = int((flat.min(axis=1) == flat.max(axis=1)).sum())
    if constant > MAX_CONSTANT_SHARE * len(images):
        raise UserError(f'{path} holds {constant:,} constant images (every pixel the same) of {len(images):,}, '
                        f'expected at most {MAX_CONSTANT_SHARE:.0%}: the file is blank or damaged; {fix}')
    counts = np.bincount(labels, minlength=10)
    if counts.min() < MIN_CLASS_SHARE * len(labels):
        rare = int(counts.argmin())
        raise UserError(f'{path} holds {counts[rare]:,} images of class {rare} of {len(labels):,}, expected at '
                        f'least {MIN_CLASS_SHARE:.0%} of each class (about 10%): the file is damaged or not '
                        f'CIFAR-10; {fix}')
