"""Bad inputs to a run's data and run flags: each gets one line saying what was expected and how to fix it, before
any training, and loses nothing (a blank batch file, a checkpoint as --data-dir, a full disk while caching, a seed
torch cannot take, an error that would leave an empty results folder)."""
import errno
import re
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import airbench
import stats
import ternary
from airbench.data import CACHE_NAME, load_cifar10
from common.errors import UserError
from common.flags import parse_flags
from conftest import FILES, REAL_CIFAR, ROOT

HYP = {'opt': {'lr': 10.0, 'epochs': 9.9, 'batch_size': 1024}}
FLAGS = (stats.FLAGS, ternary.FLAGS, airbench.FLAGS)  # as a rung's FLAGS
RECORDS, RECORD_BYTES = 10_000, 3073


def one_line_error(call, message):
    with pytest.raises(UserError, match=message) as info:
        call()
    assert '\n' not in str(info.value)
    return str(info.value)


def files_in(folder):
    return sorted(p.name for p in folder.rglob('*') if p.is_file()) if folder.exists() else []


def layout_with(source, root, name=None, data=None):
    """A binary-layout folder linking to `source`'s batch files, with file `name` replaced by `data`."""
    folder = root / 'cifar-10-batches-bin'
    folder.mkdir(parents=True)
    for file in FILES:
        if file == name:
            (folder / f'{file}.bin').write_bytes(data)
        else:
            os.symlink(source / 'cifar-10-batches-bin' / f'{file}.bin', folder / f'{file}.bin')
    return root


def records(labels, images):
    return np.concatenate([labels[:, None], images.reshape(RECORDS, -1)], axis=1).astype(np.uint8).tobytes()


ZEROS = bytes(RECORDS * RECORD_BYTES)  # the right size, no data: trained to "mean 0.00%" before
ONE_CLASS = records(np.full(RECORDS, 3), np.random.default_rng(0).integers(0, 256, (RECORDS, 3072)))


# A right-sized batch file that holds no data: refused by name when converting, nothing cached.

@pytest.mark.parametrize('name, data, message', [
    ('test_batch', ZEROS, r'holds 10,000 constant images \(every pixel the same\) of 10,000, expected at most 1%'),
    ('data_batch_4', ONE_CLASS, r'holds 0 images of class 0 of 10,000, expected at least 5% of each class'),
], ids=['blank', 'one-class'])  # the bytes would be the ids: 30 MB of them in pytest's output
def test_a_blank_or_one_class_batch_file_is_refused_by_name_and_not_cached(name, data, message, binary_cifar,
                                                                           cache_dir, tmp_path):
    root = layout_with(binary_cifar, tmp_path / 'copy', name, data)
    path = root / 'cifar-10-batches-bin' / f'{name}.bin'
    one_line_error(lambda: load_cifar10(root), f'^{path} {message}.*copy it again from the official archive$')
    assert files_in(cache_dir) == []
    assert path.read_bytes() == data


@pytest.mark.skipif(not (REAL_CIFAR / 'cifar-10-batches-bin').is_dir(), reason=f'no real CIFAR-10 at {REAL_CIFAR}')
def test_real_training_files_with_a_blank_test_batch_are_refused(cache_dir, tmp_path):
    root = layout_with(REAL_CIFAR, tmp_path / 'copy', 'test_batch', ZEROS)
    one_line_error(lambda: load_cifar10(root), r'test_batch\.bin holds 10,000 constant images')
    assert files_in(cache_dir) == []


# Several cached copies: a run without --data-dir says which one it uses, and how to pick another.

def test_with_several_cached_copies_the_one_used_is_named(binary_cifar, cache_dir, tmp_path, capsys):
    older = layout_with(binary_cifar, tmp_path / 'older')
    load_cifar10(older)
    [first] = cache_dir.glob('cifar10-*.pt')
    os.utime(first, (1e9, 1e9))  # converted long ago
    load_cifar10(binary_cifar)
    capsys.readouterr()
    load_cifar10()
    [newest] = set(cache_dir.glob('cifar10-*.pt')) - {first}
    source = (binary_cifar / 'cifar-10-batches-bin').resolve()
    assert capsys.readouterr().out == (f'using {newest}, converted from {source} (of the 2 copies cached in '
                                       f'{cache_dir}: the download, else the newest); pass --data-dir FOLDER to '
                                       'pick another copy\n')
    os.replace(first, cache_dir / CACHE_NAME)  # as a download: it comes before any conversion
    load_cifar10()
    assert capsys.readouterr().out.startswith(f'using {cache_dir / CACHE_NAME}, downloaded (of the 2 copies')


# A --save-model checkpoint passed as --data-dir: named for what it is, never "delete it".

def test_a_checkpoint_as_data_dir_is_named_and_not_to_be_deleted(cache_dir, tmp_path):
    path = tmp_path / 'teacher.pt'
    ternary.save_model(torch.nn.Linear(3, 2), path, 'main0_network.py')
    saved = path.read_bytes()
    error = one_line_error(lambda: load_cifar10(path),
                           f'^{path} is a model checkpoint written by --save-model, not CIFAR-10: pass the folder '
                           r'holding cifar-10-batches-bin/ or cifar-10-batches-py/ as --data-dir '
                           r'\(or set CIFAR10_DIR\)$')
    torch.save(torch.nn.Linear(3, 2).state_dict(), tmp_path / 'weights.pt')  # any other torch file
    error += one_line_error(lambda: load_cifar10(tmp_path / 'weights.pt'),
                            "is a torch file but not a CIFAR-10 cache of this project \\(OrderedDict without a "
                            "'format' entry\\): pass the folder holding cifar-10-batches-bin/")
    legacy = tmp_path / 'legacy.pt'  # torch.save's pre-1.6 format, which no cache of this project has
    torch.save(torch.nn.Linear(3, 2).state_dict(), legacy, _use_new_zipfile_serialization=False)
    error += one_line_error(lambda: load_cifar10(legacy),
                            f'^--data-dir {re.escape(str(legacy))} is not a CIFAR-10 cache of this project '
                            r'\(those are zip-format torch files; this is not one\): pass the folder holding')
    assert 'delete' not in error and path.read_bytes() == saved and files_in(cache_dir) == []


def test_a_cut_short_cache_is_called_damaged_and_rebuilt_from_its_source(binary_cifar, cache_dir):
    load_cifar10(binary_cifar)
    [cache] = cache_dir.glob('cifar10-*.pt')
    cache.write_bytes(cache.read_bytes()[:100_000])  # a copy that stopped early: a zip without its directory
    one_line_error(lambda: load_cifar10(cache), f'^{re.escape(str(cache))} is not a readable CIFAR-10 cache of '
                   r'this project \(damaged\?\): delete it and run again')


# A full disk while caching: one line naming the cache, no partial file, the source untouched.

def full_disk_save(obj, f, *args, **kwargs):
    """torch.save on a disk that fills up midway: part of the zip is written, then the OSError a full disk gives
    (torch.save into a Python file raises it as such)."""
    f.write(b'PK\x03\x04 half a zip')
    raise OSError(errno.ENOSPC, 'No space left on device')


def test_a_full_disk_while_caching_is_one_line_and_leaves_nothing(binary_cifar, cache_dir, monkeypatch):
    monkeypatch.setattr(torch, 'save', full_disk_save)
    one_line_error(lambda: load_cifar10(binary_cifar),
                   f'^cannot write the CIFAR-10 cache {cache_dir}/cifar10-[0-9a-f]+.pt \\(No space left on device\\): '
                   'it was not written and no partial file is left; free 200 MB there or set CIFAR10_CACHE')
    assert files_in(cache_dir) == []
    monkeypatch.undo()
    assert len(load_cifar10(binary_cifar)['test'][1]) == RECORDS  # with room again: converted from the same files


# A seed torch cannot take: refused when the flags are parsed, before any data is read.

@pytest.mark.parametrize('argv, seeds', [
    (['--seed', '99999999999999999999'], '99999999999999999999 .. 99999999999999999999'),
    (['--seed', str(2 ** 63 - 1), '--runs', '2'], f'{2 ** 63 - 1} .. {2 ** 63}'),
    (['--seed', '-1'], '-1 .. -1'),
])
def test_a_seed_outside_torchs_range_is_refused_when_parsing(argv, seeds):
    one_line_error(lambda: parse_flags(HYP, FLAGS, ['--device', 'cpu', *argv]),
                   rf'^--seed must be >= 0 and --seed \+ --runs - 1 below 2\*\*63 \(9,223,372,036,854,775,808, the '
                   rf'range of torch.manual_seed\), got seeds {seeds}: pass a --seed in that range$')


def test_the_largest_seed_allowed_is_one_torch_takes():
    _, args = parse_flags(HYP, FLAGS, ['--device', 'cpu', '--seed', str(2 ** 63 - 2), '--runs', '2'])
    torch.manual_seed(args.seed + args.runs - 1)
    torch.Generator().manual_seed(args.seed + args.runs - 1)  # the loader's own generator


def run_rung(cache_dir, *flags):
    env = dict(os.environ, CIFAR10_CACHE=str(cache_dir))  # never the user's own cache
    return subprocess.run([sys.executable, 'main0_network.py', '--device', 'cpu', *map(str, flags)], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)


def test_a_huge_seed_is_one_printed_line_and_makes_nothing(cache_dir, tmp_path):
    proc = run_rung(cache_dir, '--seed', '99999999999999999999', '--out', tmp_path / 'out',
                    '--data-dir', tmp_path / 'nowhere')
    assert proc.returncode == 1 and proc.stderr.startswith('error: --seed must be >= 0')
    assert proc.stderr.count('\n') == 1 and not (tmp_path / 'out').exists()


# A data or teacher error leaves no empty --out/<script>/ folder behind.

@pytest.mark.parametrize('flag', ['--data-dir', '--teacher'])
def test_a_data_or_teacher_error_leaves_no_empty_results_folder(flag, cache_dir, tmp_path):
    out = tmp_path / 'out'
    out.mkdir()
    proc = run_rung(cache_dir, flag, tmp_path / 'missing.pt', '--out', out, '--subset', 300, '--batch-size', 64)
    assert proc.returncode == 1 and proc.stderr.startswith('error: ') and proc.stderr.count('\n') == 1
    assert list(out.iterdir()) == []
