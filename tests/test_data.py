"""The loader finds, checks and caches CIFAR-10; every bad input gets its one-line error and no cache."""
import os
import pickle
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision

from airbench.data import CACHE_NAME, load_cifar10
from airbench.errors import UserError
from conftest import FILES, REAL_CIFAR, ROOT, expected_split


def assert_same(parts):
    for split in ('train', 'test'):
        images, labels = expected_split(split)
        assert torch.equal(parts[split][0], torch.from_numpy(images))
        assert torch.equal(parts[split][1], torch.from_numpy(labels))


def cache_files(cache_dir):
    return sorted(p.name for p in cache_dir.rglob('*') if p.is_file()) if cache_dir.exists() else []


@pytest.mark.parametrize('layout', ['binary_cifar', 'python_cifar'])
def test_returns_exact_pixels_and_labels_then_reads_the_cache(layout, cache_dir, request):
    root = request.getfixturevalue(layout)
    assert_same(load_cifar10(root))
    assert len(cache_files(cache_dir)) == 1
    assert_same(load_cifar10(root))  # second start: from the cache
    assert len(cache_files(cache_dir)) == 1


def test_layout_folder_itself_and_env_var_and_cache_file(binary_cifar, cache_dir, monkeypatch):
    assert_same(load_cifar10(binary_cifar / 'cifar-10-batches-bin'))
    monkeypatch.setenv('CIFAR10_DIR', str(binary_cifar))
    assert_same(load_cifar10())
    cache_file = next(cache_dir.glob('*.pt'))
    assert_same(load_cifar10(cache_file))
    os.rename(cache_file, cache_dir / CACHE_NAME)
    assert_same(load_cifar10(cache_dir))  # a folder holding the project's cache file


def copy_layout(src, dst, broken_name=None, broken_bytes=None):
    """A binary-layout folder linking to the good synthetic files, with one file replaced."""
    folder = dst / 'cifar-10-batches-bin'
    folder.mkdir(parents=True)
    for name in FILES:
        if name == broken_name:
            if broken_bytes is not None:
                (folder / f'{name}.bin').write_bytes(broken_bytes)
        else:
            os.symlink(src / 'cifar-10-batches-bin' / f'{name}.bin', folder / f'{name}.bin')
    return dst


def good_bytes(binary_cifar, name='data_batch_1'):
    return (binary_cifar / 'cifar-10-batches-bin' / f'{name}.bin').read_bytes()


def bad_label_bytes(binary_cifar):
    data = bytearray(good_bytes(binary_cifar))
    data[3073 * 17] = 12  # the label byte of record 17
    return bytes(data)


@pytest.mark.parametrize('case, message', [
    ('truncated', 'has 30,729,999 bytes, expected 30,730,000'),
    ('labels', 'labels outside 0..9'),
    ('missing_file', 'lacks data_batch_3.bin'),
])
def test_corrupt_binary_files(case, message, binary_cifar, cache_dir, tmp_path):
    if case == 'truncated':
        root = copy_layout(binary_cifar, tmp_path, 'data_batch_2', good_bytes(binary_cifar, 'data_batch_2')[:-1])
    elif case == 'labels':
        root = copy_layout(binary_cifar, tmp_path, 'data_batch_1', bad_label_bytes(binary_cifar))
    else:
        root = copy_layout(binary_cifar, tmp_path, 'data_batch_3')
    with pytest.raises(UserError, match=message):
        load_cifar10(root)
    assert cache_files(cache_dir) == []


def test_python_layout_wrong_count_and_garbage(python_cifar, cache_dir, tmp_path):
    folder = tmp_path / 'cifar-10-batches-py'
    folder.mkdir()
    for name in FILES:
        os.symlink(python_cifar / 'cifar-10-batches-py' / name, folder / name)
    os.remove(folder / 'test_batch')
    with open(folder / 'test_batch', 'wb') as f:
        pickle.dump({b'data': np.zeros((9999, 3072), np.uint8), b'labels': [0] * 9999}, f)
    with pytest.raises(UserError, match=r'holds uint8 data of shape \(9999, 3072\), expected uint8 of shape \(10000, 3072\)'):
        load_cifar10(tmp_path)
    good = {b'data': np.zeros((10_000, 3072), np.uint8)}
    bad_labels = [([0] * 9999, r'int64 labels of shape \(9999,\)'), ([0.5] * 10_000, 'float64 labels'),
                  (['cat'] * 10_000, 'labels of shape'), (3, r'int64 labels of shape \(\)')]
    for labels, message in bad_labels:
        with open(folder / 'test_batch', 'wb') as f:
            pickle.dump({**good, b'labels': labels}, f)
        with pytest.raises(UserError, match=message):
            load_cifar10(tmp_path)
    with open(folder / 'test_batch', 'wb') as f:
        pickle.dump({b'data': 7, b'labels': [0] * 10_000}, f)
    with pytest.raises(UserError, match=r'holds int64 data of shape \(\)'):
        load_cifar10(tmp_path)
    (folder / 'test_batch').write_bytes(b'not a pickle')
    with pytest.raises(UserError, match='is not a CIFAR-10 python batch'):
        load_cifar10(tmp_path)
    assert cache_files(cache_dir) == []


def test_without_data_dir_a_converted_copy_is_used_before_downloading(binary_cifar, cache_dir, monkeypatch, capsys):
    assert_same(load_cifar10(binary_cifar))  # converted into the cache as cifar10-<fingerprint>.pt
    monkeypatch.setattr('airbench.data.download_cifar10', lambda *a: pytest.fail('downloaded despite a cache'))
    assert_same(load_cifar10())
    assert f"converted from {(binary_cifar / 'cifar-10-batches-bin').resolve()}" in capsys.readouterr().out
    assert_same(load_cifar10(cache_dir))  # the cache folder itself as --data-dir


def test_an_unwritable_cache_folder_is_a_one_line_error(binary_cifar, tmp_path, monkeypatch):
    (tmp_path / 'file').write_text('a file, not a folder')
    monkeypatch.setenv('CIFAR10_CACHE', str(tmp_path / 'file' / 'cache'))
    with pytest.raises(UserError, match=r'cannot write the CIFAR-10 cache folder .* set CIFAR10_CACHE to a writable'):
        load_cifar10(binary_cifar)
    with pytest.raises(UserError, match='cannot write the CIFAR-10 cache folder'):
        load_cifar10()


def test_missing_and_wrong_folders(cache_dir, tmp_path):
    with pytest.raises(UserError, match='does not exist: put the official CIFAR-10'):
        load_cifar10(tmp_path / 'nowhere')
    (tmp_path / 'stuff.txt').write_text('hello')
    with pytest.raises(UserError, match='holds neither cifar-10-batches-bin/ nor cifar-10-batches-py/'):
        load_cifar10(tmp_path)


def test_corrupt_cache_file(cache_dir, tmp_path):
    bad = tmp_path / CACHE_NAME
    bad.write_bytes(b'\x00' * 100)
    with pytest.raises(UserError, match='not a readable CIFAR-10 cache'):
        load_cifar10(tmp_path)


@pytest.mark.parametrize('edit', ['five_images', 'label_42', 'int32_labels', 'lists'])
def test_a_cache_with_the_right_tag_but_wrong_contents_is_refused(edit, binary_cifar, cache_dir, tmp_path):
    parts = load_cifar10(binary_cifar)
    images, labels = parts['train'][0].clone(), parts['train'][1].clone()
    if edit == 'five_images':
        images, labels = images[:5], labels[:5]
    elif edit == 'label_42':
        labels[3] = 42
    elif edit == 'int32_labels':
        labels = labels.int()
    else:
        images, labels = images[:2].tolist(), labels[:2].tolist()
    payload = {'format': 'cifar10-uint8-v1', 'train': {'images': images, 'labels': labels},
               'test': {'images': parts['test'][0], 'labels': parts['test'][1]}}
    torch.save(payload, tmp_path / CACHE_NAME)
    with pytest.raises(UserError, match='has a malformed train split'):
        load_cifar10(tmp_path)


def test_the_cache_is_readable_by_others_as_the_umask_allows(binary_cifar, cache_dir):
    old = os.umask(0o022)
    try:
        load_cifar10(binary_cifar)
    finally:
        os.umask(old)
    [cache] = cache_dir.glob('cifar10-*.pt')
    assert cache.stat().st_mode & 0o777 == 0o644  # mkstemp alone gives 0600


def test_a_new_cache_format_converts_again_instead_of_failing(binary_cifar, cache_dir, monkeypatch):
    load_cifar10(binary_cifar)
    monkeypatch.setattr('airbench.data.CACHE_FORMAT', 'cifar10-uint8-v-next')
    assert_same(load_cifar10(binary_cifar))
    assert len(list(cache_dir.glob('cifar10-*.pt'))) == 1  # the old conversion of that folder is removed


def test_a_changed_source_folder_replaces_its_cache_and_leaves_others(binary_cifar, cache_dir, tmp_path):
    other = copy_layout(binary_cifar, tmp_path / 'other')
    load_cifar10(binary_cifar)
    load_cifar10(other)
    first = {p.name for p in cache_dir.glob('cifar10-*.pt')}
    (other / 'cifar-10-batches-bin' / 'readme.txt').write_text('a new file changes the fingerprint')
    assert_same(load_cifar10(other))
    after = {p.name for p in cache_dir.glob('cifar10-*.pt')}
    assert len(first) == len(after) == 2 and len(first & after) == 1  # binary_cifar's cache is kept


def test_unreadable_files_and_a_file_as_data_dir(binary_cifar, python_cifar, cache_dir, tmp_path, monkeypatch):
    binary = copy_layout(binary_cifar, tmp_path / 'binary', 'data_batch_2') / 'cifar-10-batches-bin'
    python = tmp_path / 'python' / 'cifar-10-batches-py'
    python.mkdir(parents=True)
    for name in FILES[:1] + FILES[2:]:
        os.symlink(python_cifar / 'cifar-10-batches-py' / name, python / name)
    for folder, name in ((binary, 'data_batch_2.bin'), (python, 'data_batch_2')):
        (folder / name).mkdir()  # a folder where a batch file should be
        with pytest.raises(UserError, match=f'cannot read .*{name} .*check its permissions'):
            load_cifar10(folder.parent)
    (tmp_path / 'notes.txt').write_text('not data')
    with pytest.raises(UserError, match='--data-dir .*notes.txt is a file, not a folder'):
        load_cifar10(tmp_path / 'notes.txt')
    monkeypatch.setenv('CIFAR10_DIR', str(tmp_path / 'nowhere'))
    with pytest.raises(UserError, match='^CIFAR10_DIR .*nowhere does not exist'):
        load_cifar10()
    assert cache_files(cache_dir) == []


def test_sigterm_while_writing_the_cache_leaves_nothing_half_written(tmp_path):
    # A job stopped by its scheduler: the temporary file is removed as on any other error.
    code = ('import sys, time\n'
            'from airbench.errors import install_excepthook\n'
            'from airbench.files import atomic_write\n'
            'install_excepthook()\n'
            'with atomic_write(sys.argv[1]) as tmp:\n'
            '    open(tmp, "w").write("half"); print("writing", flush=True); time.sleep(60)\n')
    proc = subprocess.Popen([sys.executable, '-c', code, str(tmp_path / 'cache.pt')], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == 'writing\n'
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


def test_failed_download_leaves_nothing(cache_dir, monkeypatch):
    # A closed local port answers at once, as a machine without internet does.
    monkeypatch.setattr(torchvision.datasets.CIFAR10, 'url', 'http://127.0.0.1:9/cifar-10-python.tar.gz')
    monkeypatch.setattr(torchvision.datasets.CIFAR10, 'mirrors', [], raising=False)
    with pytest.raises(UserError, match='could not download CIFAR-10.*--data-dir'):
        load_cifar10()
    assert cache_files(cache_dir) == []


@pytest.mark.skipif(not (REAL_CIFAR / 'cifar-10-batches-bin').is_dir(), reason=f'no real CIFAR-10 at {REAL_CIFAR}')
def test_real_cifar10(cache_dir):
    parts = load_cifar10(REAL_CIFAR)
    (train_images, train_labels), (test_images, test_labels) = parts['train'], parts['test']
    assert len(train_images) == 50_000 and len(test_images) == 10_000
    assert torch.bincount(train_labels).tolist() == [5000] * 10
    assert torch.bincount(test_labels).tolist() == [1000] * 10
    means = train_images.float().mean(dim=(0, 1, 2)) / 255
    assert torch.allclose(means, torch.tensor([0.4914, 0.4822, 0.4465]), atol=0.002)
    assert train_labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
