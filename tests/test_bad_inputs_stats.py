"""Bad inputs to the run path (stats/): each is refused in one line, and the log keeps every row it had."""
import errno
import os
import tracemalloc

import pytest

import stats.trial
from common import provenance
from common.errors import UserError
from common.flags import parse_flags
from stats import FLAGS, Trial

from test_stats_trial import HYP, fake_result, logged_seeds, make_args, run_trial, script  # noqa: F401 (a fixture)

OTHER_LR = {**HYP, 'opt': {**HYP['opt'], 'lr': 11.5}}


def test_two_configs_that_begin_one_new_log_cannot_both_append(script, tmp_path):
    # Both processes check the log at start, while it is still empty; the second learns of the first on append.
    first, second = Trial(script, HYP, make_args(tmp_path, runs=2)), Trial(script, OTHER_LR, make_args(tmp_path))
    for run, seed in first.pending():
        first.record(fake_result(run, seed))
    before = first.path.read_bytes()
    with pytest.raises(UserError) as on_append:
        second.record(fake_result(0, 0))
    with pytest.raises(UserError) as at_start:  # what a third process, started now, is told
        Trial(script, OTHER_LR, make_args(tmp_path))
    message = str(on_append.value)
    assert 'holds a different config (first difference: opt.lr 10.0 vs 11.5); ' in message and '\n' not in message
    assert message.split('; ')[0] == str(at_start.value).split('; ')[0]  # the start check's own words
    assert 'seed 0 is not logged' in message and message.endswith('pass --variant NAME to start a new log or --force '
                                                                  'to mix')
    assert first.path.read_bytes() == before
    forced = Trial(script, OTHER_LR, make_args(tmp_path, force=True))
    forced.record(fake_result(*forced.pending()[0]))
    assert logged_seeds(first.path) == [0, 1, 2]


def test_a_full_disk_cuts_the_log_back_to_its_earlier_rows(script, tmp_path, monkeypatch):
    path = run_trial(script, make_args(tmp_path, runs=2)).path
    before = path.read_bytes()
    trial = Trial(script, HYP, make_args(tmp_path))
    real_write, inode = os.write, path.stat().st_ino

    def full_after_40_bytes(fd, data):  # the disk takes part of the line, then is full
        if os.fstat(fd).st_ino != inode:
            return real_write(fd, data)
        if path.stat().st_size > len(before):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data[:40])
    monkeypatch.setattr(os, 'write', full_after_40_bytes)
    with pytest.raises(UserError) as info:
        trial.record(fake_result(*trial.pending()[0]))
    monkeypatch.undo()
    message = str(info.value)
    assert message.startswith(f'cannot append to {path} (No space left on device): this row is not logged; the log '
                              'keeps its earlier rows as they were') and '\n' not in message
    assert path.read_bytes() == before  # no cut-off line: the next writer starts on a line of its own
    assert run_trial(script, make_args(tmp_path, runs=1, resume=True, seed=2)).pending() == [(0, 2)]
    assert logged_seeds(path) == [0, 1, 2]


def test_a_hundred_million_runs_are_planned_without_holding_them(script, tmp_path, capsys):
    run_trial(script, make_args(tmp_path, runs=3))  # seeds 0, 1, 2 logged; the imports are done
    tracemalloc.start()
    try:
        plain, resumed, shard = (Trial(script, HYP, make_args(tmp_path, runs=10 ** 8, **flags))
                                 for flags in ({}, {'resume': True}, {'shard': '3/4'}))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 64 * 2 ** 20  # a list of 10**8 seeds alone takes over 3 GB
    assert len(plain.pending()) == 10 ** 8 and plain.pending()[:2] == [(3, 3), (4, 4)]
    assert plain.pending()[-1] == (10 ** 8 + 2, 10 ** 8 + 2)
    assert len(resumed.pending()) == 10 ** 8 - 3 and resumed.pending()[0] == (3, 3)
    assert resumed.pending()[-1] == (10 ** 8 - 1, 10 ** 8 - 1)
    assert len(shard.pending()) == 25_000_000 - 1 and shard.pending()[:2] == [(6, 6), (10, 10)]  # seed 2 is done
    logs = [line for line in capsys.readouterr().out.splitlines() if line.startswith('log: ')]
    assert logs[-3].endswith('(3 seeds already logged; this session: seeds 3 to 100000002 (100000000 of them))')
    assert all(len(line) < 300 for line in logs)


def test_gpus_refuses_more_seeds_than_its_children_can_be_handed(script, tmp_path, monkeypatch):
    monkeypatch.setattr(stats.trial, 'cuda_gpu_names', lambda device: ['Fake GPU', 'Fake GPU'])
    monkeypatch.setattr(provenance, 'device_name', lambda device: 'Fake GPU')
    with pytest.raises(UserError, match=r'--gpus hands each GPU process its seeds .* and 100000000 are planned: '
                                        r'pass --runs 10000 or less') as info:
        Trial(script, HYP, make_args(tmp_path, runs=10 ** 8, gpus='all'))
    assert '\n' not in str(info.value) and list(tmp_path.rglob('*.jsonl')) == []  # refused before any run


def test_an_empty_out_is_refused_not_taken_as_the_current_folder(script, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match='--out is empty: pass the folder of the results logs') as info:
        Trial(script, HYP, make_args(''))
    assert '\n' not in str(info.value) and not (tmp_path / 'main0_network').exists()
    with pytest.raises(UserError, match='--out is empty'):
        parse_flags({}, (FLAGS,), ['--out', '', '--device', 'cpu'])
