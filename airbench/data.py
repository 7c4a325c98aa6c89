"""Finding, checking and caching CIFAR-10 as one compact uint8 file.

Sources, in order: `--data-dir` (or the CIFAR10_DIR environment variable) holding the official binary
layout (`cifar-10-batches-bin/`), torchvision's python layout (`cifar-10-batches-py/`) or a cache file
written here (`cifar10_uint8.pt`); otherwise the cache directory (CIFAR10_CACHE, default
~/.cache/cifar10-ladder): its downloaded copy, else the newest copy converted from a --data-dir, else a
torchvision download into it. Whatever the source, the decoded arrays are cached
once, so later starts only read 184 MB of uint8 and take well under a second. With several copies cached, a run
without --data-dir prints which one it uses.

Converting checks each batch file's content as well as its size (airbench/batches.py), so a right-sized file of
zeros is refused by name instead of cached and trained on.
A full disk while caching is a one-line error, and leaves no partial file.

Every message names where the data came from: --data-dir, or CIFAR10_DIR when only the variable is set
(common/flags.py leaves data_dir None then, and load_cifar10 reads it). A cache stores the sha256 of its
images and labels, checked on every read (one pass, a fraction of a second): a damaged cache, or one of another
format, is refused with the file's name and how to rebuild it, never trained on, and never silently replaced
by a download. What a killed writer left in the cache folder is removed (common/files.py).
"""
import hashlib
import os
from pathlib import Path

import torch

from airbench.batches import (FIX_HINT, IMAGES_PER_FILE, TEST_FILE, TRAIN_FILES, check_content, convert_folder,
                              read_binary_file, read_python_file, unreadable)
from common.errors import UserError
from common.files import atomic_output, remove_stale_partials, scratch_folder

CACHE_NAME = 'cifar10_uint8.pt'
CACHE_FORMAT = 'cifar10-uint8-v2'  # v2 adds the sha256 of the images and labels
DOWNLOADED = 'torchvision download'  # the source recorded in a downloaded cache
SPLIT_SIZES = {'train': len(TRAIN_FILES) * IMAGES_PER_FILE, 'test': IMAGES_PER_FILE}
CACHE_FORMAT_PREFIX = 'cifar10-uint8-'  # every format of our cache, old ones included
CACHE_MB = 200  # a cache's size on disk: 184 MB of images, rounded up
MODEL_KEY = 'state_dict'  # what a --save-model checkpoint (ternary/distill.py) holds, unlike a cache
DATA_DIR_HINT = ('pass the folder holding cifar-10-batches-bin/ or cifar-10-batches-py/ as --data-dir '
                 '(or set CIFAR10_DIR)')


def default_cache_dir():
    return Path(os.environ.get('CIFAR10_CACHE', Path.home() / '.cache' / 'cifar10-ladder'))


def load_cifar10(data_dir=None, cache_dir=None, quiet=False):
    """Returns {'train': (images, labels), 'test': (images, labels)}: uint8 [N,32,32,3], int64 [N]."""
    given_by = '--data-dir' if data_dir else 'CIFAR10_DIR'
    data_dir = data_dir or os.environ.get('CIFAR10_DIR')
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    if cache_dir.is_dir():
        remove_stale_partials(cache_dir, 'cifar10*')
    if data_dir:
        return load_from_dir(Path(data_dir).expanduser(), cache_dir, given_by)
    cache_file = cache_dir / CACHE_NAME
    if not cache_file.exists():
        converted = newest_converted_cache(cache_dir, strict=True)
        if converted:  # an earlier --data-dir run already converted a copy: no need to download another
            parts = read_cache(converted[0])
            if not quiet:
                print(cache_note(cache_dir, *converted))
            return parts
        download_cifar10(cache_dir, quiet)
    parts = read_cache(cache_file)
    if not quiet and any(cache_dir.glob('cifar10-*.pt')):  # conversions it takes precedence over
        print(cache_note(cache_dir, cache_file, DOWNLOADED))
    return parts


def cache_note(cache_dir, path, source):
    """One line: which cached copy a run without --data-dir uses, and, when there are several, by which rule."""
    copies = len(list(cache_dir.glob('cifar10-*.pt'))) + (cache_dir / CACHE_NAME).exists()
    origin = 'downloaded' if source == DOWNLOADED else f'converted from {source}'
    rule = f' (of the {copies} copies cached in {cache_dir}: the download, else the newest)' if copies > 1 else ''
    return f'using {path}, {origin}{rule}; pass --data-dir FOLDER to pick another copy'


def newest_converted_cache(folder, strict=False):
    """(path, source folder) of the newest cache in `folder` converted from a --data-dir folder, or None. strict
    (the cache folder, which holds only ours): if none is of this format, a cache that cannot be loaded is refused
    and one of another format returned for read_cache to refuse, rather than hidden by a download."""
    damaged = other = None
    for path in sorted(folder.glob('cifar10-*.pt'), key=modified_time, reverse=True):
        try:
            payload = load_payload(path)
        except UserError as exc:
            damaged = damaged or exc
            continue
        if payload is None:
            continue
        source = payload.get('source', 'an unrecorded folder')
        if payload['format'] == CACHE_FORMAT:
            return path, source
        other = other or (path, source)
    if strict and damaged:
        raise damaged
    return other if strict else None


def modified_time(path):
    try:
        return path.stat().st_mtime
    except OSError:  # removed by another process since the listing: tried last, and then found unreadable
        return 0


def load_from_dir(data_dir, cache_dir, given_by='--data-dir'):
    if data_dir.is_file() and data_dir.name.endswith('.pt'):
        if not starts_as_zip(data_dir):  # every cache this project writes is a zip, even a cut-short one
            raise UserError(f'{given_by} {data_dir} is not a CIFAR-10 cache of this project (those are zip-format '
                            f'torch files; this is not one): {DATA_DIR_HINT}')
        return read_cache(data_dir)
    if data_dir.is_file():
        raise UserError(f'{given_by} {data_dir} is a file, not a folder (nor a .pt cache): {FIX_HINT}')
    if not data_dir.is_dir():
        raise UserError(f'{given_by} {data_dir} does not exist: {FIX_HINT}')
    if (data_dir / CACHE_NAME).exists():
        return read_cache(data_dir / CACHE_NAME)
    converted = newest_converted_cache(data_dir)  # a cache folder holding only converted copies
    if converted:
        return read_cache(converted[0])
    for layout, read_file in [('cifar-10-batches-bin', read_binary_file), ('cifar-10-batches-py', read_python_file)]:
        folder = data_dir / layout if (data_dir / layout).is_dir() else data_dir
        suffix = '.bin' if layout.endswith('bin') else ''
        if (folder / (TEST_FILE + suffix)).exists() or (folder / (TRAIN_FILES[0] + suffix)).exists():
            cache_file = cache_dir / f'cifar10-{fingerprint(folder)}.pt'
            if not cache_file.exists():
                write_cache(convert_folder(folder, suffix, read_file), cache_file, source=folder.resolve())
                remove_older_conversions(cache_dir, folder.resolve(), cache_file)
            return read_cache(cache_file)
    raise UserError(f'{given_by} {data_dir} holds neither cifar-10-batches-bin/ nor cifar-10-batches-py/: {FIX_HINT}')


def remove_older_conversions(cache_dir, source, kept):
    """Deletes the caches converted earlier from the same folder (its files changed since, or the format did),
    so a folder has one cache, not one per change. A process still reading one keeps its mapping."""
    for path in cache_dir.glob('cifar10-*.pt'):
        if path == kept:
            continue
        try:
            if torch.load(path, map_location='cpu', weights_only=True, mmap=True).get('source') == str(source):
                path.unlink()
        except Exception:
            continue  # unreadable or already gone: not ours to judge


def fingerprint(folder):
    """Names, sizes and modification times of the source files, and the cache format: a changed file, or a
    new format, gets a new cache."""
    try:
        stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()]
    except OSError as exc:
        raise unreadable(folder, exc) from None
    return hashlib.sha256(repr((str(folder.resolve()), stats, CACHE_FORMAT)).encode()).hexdigest()[:16]


def write_cache(parts, cache_file, source=DOWNLOADED):
    """Written atomically, so a failed conversion never leaves a half-written cache."""
    make_cache_dir(cache_file.parent)
    tensors = {split: tuple(torch.from_numpy(array) for array in arrays) for split, arrays in parts.items()}
    payload = {'format': CACHE_FORMAT, 'source': str(source), 'sha256': checksum(tensors)}
    for split, (images, labels) in tensors.items():
        payload[split] = {'images': images, 'labels': labels}
    # Through a Python file, so a full disk is an OSError (torch.save to a path raises a RuntimeError).
    room = f'free {CACHE_MB} MB there or set CIFAR10_CACHE to a folder with room'
    with atomic_output(cache_file, 'the CIFAR-10 cache', room) as tmp, open(tmp, 'wb') as f:
        torch.save(payload, f)


def read_cache(cache_file):
    payload = load_payload(cache_file)
    if payload is None:
        raise UserError(f'{cache_file} was removed while it was being read (by another run converting again?): '
                        'run again')
    source = payload.get('source')
    if payload['format'] != CACHE_FORMAT:
        raise UserError(f'{cache_file} is a CIFAR-10 cache of format {payload["format"]}, but this version reads '
                        f'{CACHE_FORMAT}, which adds a checksum: {rebuild_hint(source)}')
    try:
        parts = {s: (payload[s]['images'], payload[s]['labels']) for s in ('train', 'test')}
    except Exception:
        raise UserError(f'{cache_file} is not a readable CIFAR-10 cache of this project (damaged?): '
                        f'{rebuild_hint(source)}') from None
    for split, (images, labels) in parts.items():
        if not well_formed(images, labels, SPLIT_SIZES[split]):
            raise UserError(f'{cache_file} has a malformed {split} split (expected {SPLIT_SIZES[split]:,} uint8 '
                            f'32x32x3 images with int64 labels in 0..9): {rebuild_hint(source)}')
    if payload.get('sha256') != checksum(parts):
        raise UserError(f'{cache_file} is damaged: its images or labels differ from the sha256 stored when it was '
                        f'written (a disk or copy error); {rebuild_hint(source)}')
    for split, (images, labels) in parts.items():  # a cache converted before batch files were content-checked
        check_content(f'{cache_file} ({split} split)', images.numpy(), labels.numpy(), rebuild_hint(source))
    return parts


def load_payload(cache_file):
    """A cache's dict, memory-mapped (its tensors not read yet); None if the file is gone. A file that cannot be
    loaded, or is no cache of this project, is refused."""
    try:
        payload = torch.load(cache_file, map_location='cpu', weights_only=True, mmap=True)
    except FileNotFoundError:
        return None  # removed since it was listed: remove_older_conversions in another run
    except Exception:
        raise UserError(f'{cache_file} is not a readable CIFAR-10 cache of this project (damaged?): '
                        f'{rebuild_hint()}') from None
    check_is_cache(cache_file, payload)
    return payload


def starts_as_zip(path):
    try:
        with open(path, 'rb') as f:
            return f.read(4) == b'PK\x03\x04'
    except OSError as exc:  # no read permission, or a folder named *.pt
        raise unreadable(path, exc) from None


def check_is_cache(path, payload):
    """A torch file that loads but is no cache of ours (a --save-model checkpoint passed as --data-dir) is named for
    what it is, not called damaged: the rebuild hint would have the user delete their model."""
    form = payload.get('format') if isinstance(payload, dict) else None
    if isinstance(form, str) and form.startswith(CACHE_FORMAT_PREFIX):
        return
    if isinstance(payload, dict) and MODEL_KEY in payload:
        raise UserError(f'{path} is a model checkpoint written by --save-model, not CIFAR-10: {DATA_DIR_HINT}')
    what = f'format {form!r}' if form is not None else f"{type(payload).__name__} without a 'format' entry"
    raise UserError(f'{path} is a torch file but not a CIFAR-10 cache of this project ({what}): {DATA_DIR_HINT}')


def checksum(parts):
    """sha256 of the images and labels of both splits, in a fixed order: a zeroed or flipped byte anywhere in
    them changes it. One pass over 184 MB, about 0.1 s with the CPU's SHA instructions."""
    digest = hashlib.sha256()
    for split in ('train', 'test'):
        for tensor in parts[split]:
            digest.update(tensor.contiguous().numpy())
    return digest.hexdigest()


def rebuild_hint(source=None):
    """How to get a good cache back, from the source recorded in the bad one where it could be read."""
    if source == DOWNLOADED:
        return 'delete it and run again: it is rebuilt from a new download (or pass --data-dir FOLDER)'
    if source:
        return f'delete it and run again with --data-dir {source}: it is rebuilt from that folder'
    return 'delete it and run again: it is rebuilt from the source data (--data-dir FOLDER, or a download)'


def well_formed(images, labels, count):
    return (isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor)
            and images.dtype == torch.uint8 and images.shape == (count, 32, 32, 3)
            and labels.dtype == torch.int64 and labels.shape == (count,)
            and bool(((labels >= 0) & (labels <= 9)).all()))


def make_cache_dir(cache_dir):
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(cache_dir, os.W_OK):
            raise PermissionError(13, 'not writable')
    except OSError as exc:
        raise UserError(f'cannot write the CIFAR-10 cache folder {cache_dir} ({exc.strerror}): set CIFAR10_CACHE '
                        f'to a writable folder') from None


def download_cifar10(cache_dir, quiet=False):
    """Downloads with torchvision into a scratch folder that is removed whatever happens (or, after a kill, by the
    next run's remove_stale_partials: its name matches 'cifar10*')."""
    import torchvision
    make_cache_dir(cache_dir)
    with scratch_folder(cache_dir / f'{CACHE_NAME}.download') as scratch:
        if not quiet:
            print(f'downloading CIFAR-10 with torchvision; caching it in {cache_dir / CACHE_NAME}')
        try:
            torchvision.datasets.CIFAR10(scratch, download=True)
        except Exception as exc:
            raise UserError(f'could not download CIFAR-10 ({type(exc).__name__}: {exc}); without internet, '
                            f'{FIX_HINT}') from None
        write_cache(convert_folder(scratch / 'cifar-10-batches-py', '', read_python_file), cache_dir / CACHE_NAME)
