"""The loader finds, checks and caches CIFAR-10; every bad input gets its one-line error and no cache."""
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
import torchvision

from airbench.data import CACHE_FORMAT, CACHE_NAME, load_cifar10, write_cache
from common.errors import UserError
from common.files import STALE_SECONDS, atomic_write
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
    payload = {'format': CACHE_FORMAT, 'train': {'images': images, 'labels': labels},
               'test': {'images': parts['test'][0], 'labels': parts['test'][1]}}
    torch.save(payload, tmp_path / CACHE_NAME)
    with pytest.raises(UserError, match='has a malformed train split'):
        load_cifar10(tmp_path)


def test_a_well_formed_cache_of_blank_images_is_refused_with_its_rebuild_hint(binary_cifar, cache_dir, tmp_path):
    """A cache converted before batch files were content-checked may hold a blank file's zeros, checksum and all."""
    parts = {split: tuple(t.numpy() for t in tensors) for split, tensors in load_cifar10(binary_cifar).items()}
    parts['test'] = (np.zeros_like(parts['test'][0]), parts['test'][1])
    write_cache(parts, tmp_path / CACHE_NAME, source=binary_cifar)
    cache, source = re.escape(str(tmp_path / CACHE_NAME)), re.escape(str(binary_cifar))
    with pytest.raises(UserError, match=rf'^{cache} \(test split\) holds 10,000 constant images .*blank or damaged; '
                                        rf'delete it and run again with --data-dir {source}'):
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
    (tmp_path / 'cache.pt').write_bytes(b'PK\x03\x04')

    def denied(*args, **kwargs):  # as root, chmod 000 does not stop a read: the refusal is simulated
        raise PermissionError(13, 'Permission denied')
    with monkeypatch.context() as patch:
        patch.setattr('airbench.data.open', denied, raising=False)
        with pytest.raises(UserError, match=r'^cannot read .*cache.pt \(Permission denied\): it must be readable'):
            load_cifar10(tmp_path / 'cache.pt')
    monkeypatch.setenv('CIFAR10_DIR', str(tmp_path / 'nowhere'))
    with pytest.raises(UserError, match='^CIFAR10_DIR .*nowhere does not exist'):
        load_cifar10()
    assert cache_files(cache_dir) == []


def test_sigterm_while_writing_the_cache_leaves_nothing_half_written(tmp_path):
    # A job stopped by its scheduler: the temporary file is removed as on any other error.
    code = ('import sys, time\n'
            'from common.errors import install_excepthook\n'
            'from common.files import atomic_write\n'
            'install_excepthook()\n'
            'with atomic_write(sys.argv[1]) as tmp:\n'
            '    open(tmp, "w").write("half"); print("writing", flush=True); time.sleep(60)\n')
    proc = subprocess.Popen([sys.executable, '-c', code, str(tmp_path / 'cache.pt')], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == 'writing\n'
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


def zero_bytes(path, offset, count=4096):
    with open(path, 'r+b') as f:
        f.seek(offset)
        f.write(b'\0' * count)


def test_zeroed_bytes_in_a_converted_cache_are_refused_before_training(binary_cifar, cache_dir, monkeypatch):
    load_cifar10(binary_cifar)
    [cache] = cache_dir.glob('cifar10-*.pt')
    zero_bytes(cache, cache.stat().st_size // 2)  # inside the train images: the file still loads
    damaged = cache.read_bytes()
    source = (binary_cifar / 'cifar-10-batches-bin').resolve()
    message = (f'^{cache} is damaged: its images or labels differ from the sha256 stored when it was written .*; '
               f'delete it and run again with --data-dir {source}: it is rebuilt from that folder$')
    with pytest.raises(UserError, match=message):
        load_cifar10(binary_cifar)
    monkeypatch.setattr('airbench.data.download_cifar10', lambda *a: pytest.fail('downloaded over a damaged cache'))
    with pytest.raises(UserError, match=message):
        load_cifar10()
    assert cache.read_bytes() == damaged  # refused, not repaired or replaced behind the user's back
    cache.unlink()
    assert_same(load_cifar10(binary_cifar))  # rebuilt from the source, as the message says


def test_a_damaged_download_cache_is_refused_with_its_name(synthetic_cache, cache_dir):
    cache_dir.mkdir()
    shutil.copy(synthetic_cache / CACHE_NAME, cache_dir / CACHE_NAME)  # written as a download writes it
    assert_same(load_cifar10())
    zero_bytes(cache_dir / CACHE_NAME, (cache_dir / CACHE_NAME).stat().st_size - 100_000)  # in the test images
    with pytest.raises(UserError, match=f'^{cache_dir / CACHE_NAME} is damaged: .*rebuilt from a new download'):
        load_cifar10()


def test_an_unloadable_cache_without_data_dir_is_named_not_reported_as_a_failed_download(binary_cifar, cache_dir,
                                                                                         monkeypatch):
    load_cifar10(binary_cifar)
    [cache] = cache_dir.glob('cifar10-*.pt')
    zero_bytes(cache, 0)  # the zip header: torch.load fails
    monkeypatch.setattr('airbench.data.download_cifar10', lambda *a: pytest.fail('downloaded over a damaged cache'))
    with pytest.raises(UserError, match=f'^{cache} is not a readable CIFAR-10 cache of this project .damaged.*: '
                                        'delete it and run again') as info:
        load_cifar10()
    assert '\n' not in str(info.value) and 'download CIFAR-10' not in str(info.value)


def old_format_cache(parts, path, source):
    """A cache as the previous format wrote it: no checksum."""
    payload = {'format': 'cifar10-uint8-v1', 'source': str(source)}
    for split, (images, labels) in parts.items():
        payload[split] = {'images': images, 'labels': labels}
    torch.save(payload, path)


def test_a_cache_of_the_old_format_without_checksum_is_refused_or_converted_again(binary_cifar, cache_dir):
    parts = load_cifar10(binary_cifar, cache_dir=cache_dir / 'elsewhere')
    old_format_cache(parts, cache_dir / CACHE_NAME, 'torchvision download')
    with pytest.raises(UserError, match=f'^{cache_dir / CACHE_NAME} is a CIFAR-10 cache of format cifar10-uint8-v1, '
                                        f'but this version reads {CACHE_FORMAT}.*rebuilt from a new download'):
        load_cifar10()
    (cache_dir / CACHE_NAME).unlink()
    source = (binary_cifar / 'cifar-10-batches-bin').resolve()
    old_format_cache(parts, cache_dir / 'cifar10-0123456789abcdef.pt', source)  # converted by the old version
    with pytest.raises(UserError, match=f'format cifar10-uint8-v1.*run again with --data-dir {source}'):
        load_cifar10()
    assert_same(load_cifar10(binary_cifar))  # converted again; the old conversion of that folder is removed
    assert [p.name for p in cache_dir.glob('*.pt')] != ['cifar10-0123456789abcdef.pt']
    assert len(list(cache_dir.glob('*.pt'))) == 1 and 'sha256' in torch.load(next(cache_dir.glob('*.pt')))
    assert_same(load_cifar10())


KILLED_WRITER = ('import sys, time\n'
                 'from common.files import atomic_write\n'
                 'with atomic_write(sys.argv[1]) as tmp:\n'
                 '    open(tmp, "w").write("half"); print("writing", flush=True); sys.stdin.readline()\n')


def start_writer(target):
    proc = subprocess.Popen([sys.executable, '-c', KILLED_WRITER, str(target)], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == 'writing\n'
    return proc


def partials(folder):
    return sorted(p.name for p in folder.glob('.*.partial-*'))


def test_a_cache_half_written_by_a_killed_run_is_removed_but_a_live_writers_is_kept(binary_cifar, cache_dir):
    cache_dir.mkdir()
    killed = start_writer(cache_dir / CACHE_NAME)
    killed.kill()  # SIGKILL: no finally block runs
    killed.wait(timeout=30)
    [left] = partials(cache_dir)
    live = start_writer(cache_dir / 'cifar10-live.pt')  # another run converting right now
    [live_partial] = [name for name in partials(cache_dir) if name != left]
    other_host = cache_dir / f'.{CACHE_NAME}.partial-otherhost-{os.getpid()}-abc'
    old_style = cache_dir / f'.{CACHE_NAME}.partial-k2j4_x9q'  # named before the pid was in the name
    for path in (other_host, old_style):
        path.write_text('half')
    os.utime(old_style, (time.time() - STALE_SECONDS - 60,) * 2)
    try:
        assert_same(load_cifar10(binary_cifar))
        assert partials(cache_dir) == sorted([live_partial, other_host.name])
    finally:
        live.communicate('\n', timeout=30)
    assert live.returncode == 0 and (cache_dir / 'cifar10-live.pt').read_text() == 'half'
    assert partials(cache_dir) == [other_host.name]  # a writer on another host may be alive: kept until stale


def test_the_next_write_of_a_file_removes_what_a_killed_writer_left(tmp_path):
    killed = start_writer(tmp_path / 'model.tpk')
    killed.kill()
    killed.wait(timeout=30)
    assert len(partials(tmp_path)) == 1
    with atomic_write(tmp_path / 'model.tpk') as tmp:
        assert partials(tmp_path) == [os.path.basename(tmp)]
        open(tmp, 'w').write('whole')
    assert partials(tmp_path) == [] and (tmp_path / 'model.tpk').read_text() == 'whole'


@pytest.mark.parametrize('where', ['nowhere', 'notes.txt', 'empty'])
def test_cifar10_dir_is_named_in_every_error_it_causes(where, cache_dir, tmp_path, monkeypatch):
    (tmp_path / 'notes.txt').write_text('not data')
    (tmp_path / 'empty').mkdir()
    monkeypatch.setenv('CIFAR10_DIR', str(tmp_path / where))
    with pytest.raises(UserError, match=f'^CIFAR10_DIR {tmp_path / where} ') as info:
        load_cifar10(None)  # what the rungs pass when only the variable is set (common/flags.py)
    assert '--data-dir ' + str(tmp_path) not in str(info.value)
    with pytest.raises(UserError, match=f'^--data-dir {tmp_path / where} '):
        load_cifar10(tmp_path / where)  # the flag wins over the variable, and is named
    assert cache_files(cache_dir) == []


def test_a_killed_downloads_scratch_folder_is_removed_by_the_next_run(binary_cifar, cache_dir):
    """What SIGKILL leaves of a download (its scratch folder, half a tarball in it) goes at the next load; a
    download running now in another process is left alone."""
    from common.files import host_name
    cache_dir.mkdir()
    dead_pid, live_pid = 2**22 + 7, os.getpid()  # above the kernel's pid_max default: no such process
    dead, live = (cache_dir / f'.{CACHE_NAME}.download.partial-{host_name()}-{pid}-x1' for pid in (dead_pid, live_pid))
    for folder in (dead, live):
        (folder / 'cifar-10-batches-py').mkdir(parents=True)
        (folder / 'cifar-10-python.tar.gz').write_bytes(b'half')
    load_cifar10(binary_cifar)
    assert not dead.exists() and live.is_dir()


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
