"""Shared fixtures: small-entropy synthetic CIFAR-10 written in the official layouts, and the real copy."""
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from common import errors
from common.precision import resolve_dtype

ROOT = Path(__file__).resolve().parents[1]
# What a run with --dtype auto trains in on this CPU (bf16 where it has native bf16): part of every log's name.
CPU_LOG = f"full__cpu-{resolve_dtype('auto', 'cpu')}.jsonl"
REAL_CIFAR = Path(os.environ.get('CIFAR10_REAL_DIR', ROOT.parent / 'shared' / 'cifar10'))
FILES = [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']


def make_split(seed, n=10_000):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)


def write_binary_layout(root):
    folder = root / 'cifar-10-batches-bin'
    folder.mkdir(parents=True)
    for i, name in enumerate(FILES):
        images, labels = make_split(i)
        records = np.concatenate([labels[:, None], images.reshape(len(images), -1)], axis=1)
        records.tofile(folder / f'{name}.bin')
    return root


def write_python_layout(root):
    folder = root / 'cifar-10-batches-py'
    folder.mkdir(parents=True)
    for i, name in enumerate(FILES):
        images, labels = make_split(i)
        batch = {b'data': images.reshape(len(images), -1), b'labels': labels.tolist()}
        with open(folder / name, 'wb') as f:
            pickle.dump(batch, f)
    return root


def expected_split(split):
    """What the loader must return for the synthetic data: NHWC uint8 images and int64 labels."""
    parts = [make_split(i) for i in (range(5) if split == 'train' else [5])]
    images = np.concatenate([p[0] for p in parts]).transpose(0, 2, 3, 1)
    return images, np.concatenate([p[1] for p in parts]).astype(np.int64)


@pytest.fixture(autouse=True)
def no_trial_hooks(monkeypatch):
    """A stats.Trial hooks itself into common.errors (what a stop keeps, where a diverged run is recorded); each
    test starts without the hooks an earlier test's trial left, and leaves none behind."""
    monkeypatch.setattr(errors, 'stop_note', None)
    monkeypatch.setattr(errors, 'divergence_note', None)


@pytest.fixture(scope='session')
def binary_cifar(tmp_path_factory):
    return write_binary_layout(tmp_path_factory.mktemp('binary'))


@pytest.fixture(scope='session')
def python_cifar(tmp_path_factory):
    return write_python_layout(tmp_path_factory.mktemp('python'))


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    """A fresh, empty cache directory; the user's own cache is never touched by tests."""
    path = tmp_path / 'cache'
    monkeypatch.setenv('CIFAR10_CACHE', str(path))
    monkeypatch.delenv('CIFAR10_DIR', raising=False)
    return path


@pytest.fixture(scope='session')
def synthetic_cache(binary_cifar, tmp_path_factory):
    """The synthetic dataset converted once into the project's cache file, for the rung smoke tests."""
    from airbench.batches import convert_folder, read_binary_file
    from airbench.data import CACHE_NAME, write_cache
    cache_file = tmp_path_factory.mktemp('cache') / CACHE_NAME
    write_cache(convert_folder(binary_cifar / 'cifar-10-batches-bin', '.bin', read_binary_file), cache_file)
    return cache_file.parent
