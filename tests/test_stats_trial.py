"""stats.Trial and the results log: seeds, resume, shards, merge, refusals, damaged lines, --gpus."""
import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys

import pytest

from common import errors
from common.errors import UserError
from conftest import ROOT
from reports.__main__ import main as reports_main
from stats import Trial
from stats.diverged import read_divergences
from stats.log import append_row, log_path, merge_shards, read_rows, same_config, seeds_in
from stats.gpus import parse_gpus, strip_gpus_flag

HYP = {'opt': {'epochs': 1.0, 'lr': 10.0}, 'aug': {'flip': 'random'}, 'net': {'width': 8, 'dtype': 'fp32'}}


def make_args(out, **overrides):
    """The run-control namespace of the contract, with its defaults; device already resolved."""
    defaults = dict(runs=1, resume=False, seed=0, data_dir=None, device='cpu', out=str(out), variant=None, force=False, shard=None,
                    gpus=None, subset=0, warmup=True, ternary=False, ternary_acts=0, ternary_per_channel=False,
                    ternary_keep_first=True, ternary_keep_last=False, teacher=None, kd_alpha=0.5,
                    kd_temperature=4.0, save_model=None)
    return argparse.Namespace(**{**defaults, **overrides})


def fake_result(run, seed):
    return dict(run=run, seed=seed, epochs=1.0, val_acc=0.9, tta_val_acc=0.93 + 0.001 * seed,
                time_seconds=1.0 + seed, peak_memory_bytes=None)


@pytest.fixture
def script(tmp_path):
    path = tmp_path / 'main0_network.py'
    path.write_text('"""main0_network.py: a stand-in rung."""\n')
    return path


def run_trial(script, args, hyp=HYP):
    trial = Trial(script, hyp, args)
    for run, seed in trial.pending():
        trial.record(fake_result(run, seed))
    return trial


def logged_seeds(path):
    return [row['seed'] for row in read_rows(path)]


def test_rows_hold_result_provenance_and_config(script, tmp_path):
    trial = run_trial(script, make_args(tmp_path / 'out', runs=3, subset=256, data_dir='/data'))
    assert trial.path == tmp_path / 'out' / 'main0_network' / 'full__cpu-fp32.jsonl'
    rows = read_rows(trial.path)
    assert [(row['run'], row['seed']) for row in rows] == [(0, 0), (1, 1), (2, 2)]
    row = rows[0]
    assert row['script'] == 'main0_network.py' and row['variant'] == 'full' and row['hyp'] == HYP
    assert row['args']['subset'] == 256 and 'data_dir' not in row['args'] and 'runs' not in row['args']
    assert row['device'] == 'cpu' and row['git_commit'] == 'unknown' and len(row['script_sha256']) == 64
    assert set(row['versions']) == {'python', 'torch', 'cuda', 'cudnn', 'triton'} and row['date'].endswith('+00:00')
    assert list(row) == ['script', 'variant', *fake_result(0, 0), 'date', 'device', 'git_commit', 'script_sha256',
                         'versions', 'gpu_info', 'cpu_info', 'hyp', 'args']  # provenance()'s fields, date per row
    assert row['cpu_info']['cores'] >= 1 and row['cpu_info']['torch_isa'] and row['cpu_info']['model']


def test_a_run_whose_evaluation_is_nan_is_refused_by_name_and_not_logged(script, tmp_path):
    # A rung's evaluate gives NaN when the model's outputs are not finite: diverged after its last checked loss.
    trial = Trial(script, HYP, make_args(tmp_path, runs=3))
    trial.record(fake_result(0, 0))
    for key in ('tta_val_acc', 'val_acc'):
        with pytest.raises(UserError, match=r'^run 1 diverged: the model\'s outputs are NaN or infinite'):
            trial.record({**fake_result(1, 1), key: float('nan')})
    assert logged_seeds(trial.path) == [0]
    trial.record(fake_result(2, 2))  # the runs after it log as before
    assert logged_seeds(trial.path) == [0, 2]


def test_a_diverged_run_is_recorded_beside_the_log_and_said_when_its_seed_runs_again(script, tmp_path, capsys):
    trial = Trial(script, HYP, make_args(tmp_path, runs=3, seed=10))
    trial.record(fake_result(0, 10))
    record = tmp_path / 'main0_network' / 'diverged' / 'full__cpu-fp32.jsonl'
    # as common.table.check_finite_loss raises it in a rung's loop: run 1 of this trial is seed 11
    assert str(errors.diverged(1, 'its training loss is nan at epoch 2')) == (
        f'run 1 diverged: its training loss is nan at epoch 2, so it is not logged (the runs before it are); recorded '
        f"in {record}: lower the learning rates (--lr and the rung's other lr flags), or check the --teacher "
        'checkpoint')
    with pytest.raises(UserError, match=f"^run 2 diverged: the model's outputs .* recorded in {record}:"):
        trial.record({**fake_result(2, 12), 'val_acc': float('nan')})
    assert 'recorded' not in str(errors.diverged('warmup', 'its training loss is inf at epoch 0'))  # random labels
    assert logged_seeds(trial.path) == [10]
    with pytest.raises(UserError, match='this file is not a results log'):  # no statistic can read it as a log
        read_rows(record)
    first, second = read_divergences(trial.path)
    assert (first['run'], first['seed'], first['diverged']) == (1, 11, 'its training loss is nan at epoch 2')
    assert (second['seed'], second['diverged']) == (12, "the model's outputs are NaN or infinite at its final "
                                                        'evaluation')
    assert same_config(first, trial.config) and first['script_sha256'] == read_rows(trial.path)[0]['script_sha256']
    capsys.readouterr()
    assert Trial(script, HYP, make_args(tmp_path, runs=3, seed=10, resume=True)).pending() == [(1, 11), (2, 12)]
    assert (f'note: seeds 11, 12 of this config diverged before (recorded in {record.parent}) and run again now'
            in capsys.readouterr().out)
    assert Trial(script, HYP, make_args(tmp_path, runs=2, seed=12, resume=True)).pending() == [(0, 12), (1, 13)]
    assert 'note: seed 12 of this config diverged before' in capsys.readouterr().out
    Trial(script, HYP, make_args(tmp_path, runs=4, seed=10, shard='2/2'))  # a shard of the trial: seeds 11, 13
    assert 'note: seed 11 of this config diverged before' in capsys.readouterr().out


def test_a_variant_whose_runs_only_diverged_still_holds_one_config(script, tmp_path, capsys):
    Trial(script, HYP, make_args(tmp_path, variant='x'))
    errors.diverged(0, 'its training loss is nan at epoch 0')  # no row: the log does not exist
    lower = {**HYP, 'opt': {**HYP['opt'], 'lr': 1.0}}  # the natural retry: a lower lr
    with pytest.raises(UserError, match=r'diverged/x__cpu-fp32.jsonl holds a different config \(first difference: '
                                        r'opt.lr 10.0 vs 1.0\); pass --variant NAME'):
        Trial(script, lower, make_args(tmp_path, variant='x'))
    capsys.readouterr()
    trial = Trial(script, lower, make_args(tmp_path, variant='x', force=True))  # mixed on purpose: not this config's
    assert trial.pending() == [(0, 0)] and 'diverged before' not in capsys.readouterr().out


def test_a_divergence_that_cannot_be_recorded_is_still_one_line(script, tmp_path):
    trial = Trial(script, HYP, make_args(tmp_path))
    (tmp_path / 'main0_network' / 'diverged' / 'full__cpu-fp32.jsonl').mkdir(parents=True)  # a folder in its place
    message = str(errors.diverged(0, 'its training loss is nan at epoch 0'))
    assert '(nor recorded: ' in message and 'recorded in' not in message and '\n' not in message
    assert message.endswith("lower the learning rates (--lr and the rung's other lr flags), or check the --teacher "
                            'checkpoint')
    with pytest.raises(UserError, match='as a divergence record'):  # read back as a log would be: refused by name
        read_divergences(trial.path)


def test_a_damaged_divergence_record_is_skipped_with_a_warning(script, tmp_path, capsys):
    trial = Trial(script, HYP, make_args(tmp_path, runs=2))
    errors.diverged(0, 'its training loss is nan at epoch 0')
    record = tmp_path / 'main0_network' / 'diverged' / 'full__cpu-fp32.jsonl'
    good = record.read_text()
    record.write_text('{"seed": [1], "diverged": "x", "hyp": {}, "args": {}}\n' + good + '{"seed": 1, "dive')
    assert [entry['seed'] for entry in read_divergences(trial.path)] == [0]
    err = capsys.readouterr().err
    assert f'warning: {record} line 1 holds a field of the wrong type; skipped, left in place' in err
    assert f'warning: {record} line 3 is cut short (a run killed while writing?)' in err


def test_with_no_seed_to_run_nothing_is_trained_or_written(script, tmp_path, capsys):
    run_trial(script, make_args(tmp_path, runs=2))
    args = make_args(tmp_path, runs=2, resume=True, save_model=str(tmp_path / 'm.pt'),
                     export_packed=str(tmp_path / 'm.tpk'))
    assert Trial(script, HYP, args).pending() == []
    # the only model left to write would be the warm-up run's, trained on random labels
    assert args.warmup is False and args.save_model is None and args.export_packed is None
    out = capsys.readouterr().out
    assert f'note: no run to do, so --save-model {tmp_path / "m.pt"} is not written' in out
    assert f'note: no run to do, so --export-packed {tmp_path / "m.tpk"} is not written' in out
    args = make_args(tmp_path, runs=3, resume=True, save_model=str(tmp_path / 'm.pt'))
    assert Trial(script, HYP, args).pending() == [(2, 2)] and args.warmup and args.save_model  # a run: as asked


def test_running_again_continues_with_new_seeds(script, tmp_path, capsys):
    run_trial(script, make_args(tmp_path, runs=2))
    trial = run_trial(script, make_args(tmp_path, runs=3))
    assert trial.pending() == [(2, 2), (3, 3), (4, 4)] and logged_seeds(trial.path) == [0, 1, 2, 3, 4]
    assert Trial(script, HYP, make_args(tmp_path, runs=2, seed=3)).pending() == [(2, 5), (3, 6)]
    trial.report()
    out = capsys.readouterr().out
    assert 'mean/std over 3 runs' in out and 'n=5' in out and 'verdict: ' in out


def test_resume_finishes_the_planned_seeds_only(script, tmp_path):
    run_trial(script, make_args(tmp_path, runs=2))
    assert Trial(script, HYP, make_args(tmp_path, runs=2, resume=True)).pending() == []
    trial = run_trial(script, make_args(tmp_path, runs=4, resume=True))
    assert trial.pending() == [(2, 2), (3, 3)] and logged_seeds(trial.path) == [0, 1, 2, 3]


def test_shards_split_the_runs_and_resume_by_seed(script, tmp_path):
    slices = [Trial(script, HYP, make_args(tmp_path, runs=10, shard=f'{k}/3')).pending() for k in (1, 2, 3)]
    assert [[seed for _, seed in pairs] for pairs in slices] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    trial = Trial(script, HYP, make_args(tmp_path, runs=10, shard='2/3'))
    assert trial.path.name == 'full__cpu-fp32.shard-2-of-3.jsonl'
    trial.record(fake_result(1, 1))  # then the job is killed; the rerun does the rest of its slice only
    assert Trial(script, HYP, make_args(tmp_path, runs=10, shard='2/3')).pending() == [(4, 4), (7, 7)]
    append_row(log_path(tmp_path, 'main0_network.py', 'full', 'cpu-fp32'), {**read_rows(trial.path)[0], 'seed': 4})
    assert Trial(script, HYP, make_args(tmp_path, runs=10, shard='2/3')).pending() == [(7, 7)]  # merged


def test_merge_appends_new_seeds_only_and_keeps_existing_bytes(script, tmp_path, capsys):
    shards = [run_trial(script, make_args(tmp_path, runs=4, shard=f'{k}/2')).path for k in (1, 2)]
    main = run_trial(script, make_args(tmp_path, runs=1)).path
    assert logged_seeds(main) == [4]  # a plain run counts the seeds of the unmerged shard logs as done
    before = main.read_bytes()
    [message] = merge_shards(shards)
    assert 'added 4 rows' in message and '0 already there' in message
    assert main.read_bytes().startswith(before) and sorted(logged_seeds(main)) == [0, 1, 2, 3, 4]
    assert '(4 already there)' in merge_shards(shards)[0] and sorted(logged_seeds(main)) == [0, 1, 2, 3, 4]


def test_merge_reports_a_seed_run_twice_with_different_results(script, tmp_path):
    shard = run_trial(script, make_args(tmp_path, runs=2, shard='1/1')).path
    main = log_path(tmp_path, 'main0_network.py', 'full', 'cpu-fp32')
    append_row(main, {**read_rows(shard)[0], 'tta_val_acc': 0.5})  # seed 0 again, say from a copied log
    [message] = merge_shards([shard])
    assert 'added 1 rows' in message and 'seeds 0 were run twice with different results' in message
    assert [row['tta_val_acc'] for row in read_rows(main)] == [0.5, 0.931]


def test_merge_refuses_a_shard_of_another_config(script, tmp_path):
    main = run_trial(script, make_args(tmp_path, runs=1)).path
    with pytest.raises(UserError, match='different config'):  # a shard job checks the main log as well
        Trial(script, HYP, make_args(tmp_path, runs=2, shard='1/2', subset=100))
    shard = run_trial(script, make_args(tmp_path, runs=2, shard='2/2', subset=100, force=True)).path
    with pytest.raises(UserError, match='different config'):  # and a plain run checks the shard logs
        Trial(script, HYP, make_args(tmp_path, runs=1))
    before = main.read_bytes()
    with pytest.raises(UserError, match='different config .first difference: subset 0 vs 100'):
        merge_shards([shard])
    assert main.read_bytes() == before
    with pytest.raises(UserError, match='not a shard log'):
        merge_shards([main])


def test_a_different_config_is_refused_unless_forced(script, tmp_path):
    run_trial(script, make_args(tmp_path, runs=2))
    changed = {**HYP, 'opt': {'epochs': 1.0, 'lr': 11.5}}
    with pytest.raises(UserError, match=r'holds a different config \(first difference: opt\.lr 10\.0 vs 11\.5\); '
                                        r'pass --variant NAME to start a new log or --force to mix'):
        Trial(script, changed, make_args(tmp_path))
    with pytest.raises(UserError, match='ternary_acts 0 vs 8'):
        Trial(script, HYP, make_args(tmp_path, ternary_acts=8, variant='full'))
    forced = run_trial(script, make_args(tmp_path, force=True), hyp=changed)
    assert logged_seeds(forced.path) == [0, 1, 2]  # mixed in, continuing the seeds
    run_trial(script, make_args(tmp_path))  # either config of the mixed log goes on without --force
    run_trial(script, make_args(tmp_path), hyp=changed)
    assert logged_seeds(forced.path) == [0, 1, 2, 3, 4]
    with pytest.raises(UserError, match='first difference: opt.lr 10.0 vs 12.0'):
        Trial(script, {**HYP, 'opt': {'epochs': 1.0, 'lr': 12.0}}, make_args(tmp_path))
    assert Trial(script, changed, make_args(tmp_path, variant='lr11')).path.name == 'lr11__cpu-fp32.jsonl'


def test_a_leaf_added_since_a_log_began_reads_there_as_declared(script, tmp_path, monkeypatch):
    """A hyp leaf added after a log's rows were written: the rows read as stats.log.LEAVES_BEFORE declares they ran,
    so today's code continues the log with that value, and another value is refused naming that leaf."""
    from stats import log
    run_trial(script, make_args(tmp_path))
    grown = {**HYP, 'net': {**HYP['net'], 'grown': 1}}
    with pytest.raises(UserError, match=r'first difference: net\.grown \(absent\) vs 1\)'):
        Trial(script, grown, make_args(tmp_path))  # undeclared: what the row ran is unknown
    monkeypatch.setitem(log.LEAVES_BEFORE, script.name, {('net', 'grown'): 1})
    assert logged_seeds(run_trial(script, make_args(tmp_path), hyp=grown).path) == [0, 1]
    with pytest.raises(UserError, match=r'first difference: net\.grown 1 vs 2\)'):
        Trial(script, {**HYP, 'net': {**HYP['net'], 'grown': 2}}, make_args(tmp_path))


def test_variant_defaults_and_bad_names(script, tmp_path):
    def variant(**flags):
        return Trial(script, HYP, make_args(tmp_path, **flags)).variant
    assert variant() == 'full' and variant(ternary=True) == 'ternary'
    assert variant(ternary=True, teacher='t.pt') == 'ternary-kd' and variant(teacher='t.pt') == 'full-kd'
    assert variant(variant='lr12', ternary=True) == 'lr12'
    for bad in ('a/b', 'x__y', '', 'full.shard-1-of-2'):
        with pytest.raises(UserError, match='--variant'):
            variant(variant=bad)


def test_a_log_of_another_script_is_refused(script, tmp_path):
    trial = run_trial(script, make_args(tmp_path))
    other = tmp_path / 'main1_whiten.py'
    other.write_text('"""main1_whiten.py = main0_network.py + whitening."""\n')
    target = log_path(tmp_path, 'main1_whiten.py', 'full', 'cpu-fp32')
    target.parent.mkdir()
    shutil.copy(trial.path, target)
    with pytest.raises(UserError, match='holds runs of main0_network.py, not main1_whiten.py'):
        Trial(other, HYP, make_args(tmp_path))


@pytest.mark.parametrize('content, message', [
    ('seed,tta_val_acc\n0,0.94\n', 'line 1 is not JSON'),
    ('[1, 2]\n', 'line 1 is not a results row'),
    ('{"seed": 0}\n', 'line 1 is not a results row'),
    ("{'seed': 0, 'tta_val_acc': 0.94}\n", 'line 1 is not JSON'),  # a Python dict repr is no cut-short row
    (json.dumps({'script': 'main0_network.py', 'variant': 'full', 'seed': 0, 'hyp': {}, 'args': {}, 'device': 'cpu',
                 'tta_val_acc': None, 'time_seconds': 1.0}) + '\n', 'line 1: tta_val_acc is null, not a number'),
    (json.dumps({'script': 'main0_network.py', 'variant': 'full', 'seed': '0', 'hyp': {}, 'args': {}, 'device': 'cpu',
                 'tta_val_acc': 0.9, 'time_seconds': 1.0}) + '\n', 'line 1: seed is "0", not an integer'),
])
def test_a_file_that_is_not_a_results_log_is_refused(script, tmp_path, content, message):
    path = log_path(tmp_path, 'main0_network.py', 'full', 'cpu-fp32')
    path.parent.mkdir()
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        Trial(script, HYP, make_args(tmp_path))
    assert path.read_text() == content


def test_a_cut_short_last_line_is_reported_kept_and_isolated(script, tmp_path, capsys):
    path = run_trial(script, make_args(tmp_path, runs=2)).path
    cut = path.read_text().splitlines()[1][:40]
    path.write_text(path.read_text().splitlines()[0] + '\n' + cut)  # seed 1's row, killed mid-write
    trial = run_trial(script, make_args(tmp_path, runs=2))
    assert f'{path} line 2 is cut short' in capsys.readouterr().err
    assert trial.pending() == [(1, 1), (2, 2)]  # the damaged run is redone, not counted
    lines = path.read_text().split('\n')
    assert lines[1] == cut and json.loads(lines[2])['seed'] == 1 and json.loads(lines[3])['seed'] == 2
    assert logged_seeds(path) == [0, 1, 2]


DAMAGE = {  # what a crash, a disk or a hand edit can leave on one line of a log
    'junk': b'oops, a note typed into the log',
    'nul tail': b'\0' * 300,
    'not utf-8': b'{"script": "main0_network.py", "note": "caf\xe9"}',
    'not a row': b'{"seed": 2, "tta_val_acc": 0.99}',  # its seed must not count as done either
}


@pytest.mark.parametrize('where', ['middle', 'end'])
@pytest.mark.parametrize('damage', list(DAMAGE))
def test_a_damaged_line_anywhere_is_reported_skipped_and_kept(script, tmp_path, capsys, damage, where):
    path = run_trial(script, make_args(tmp_path, runs=2)).path
    first, second = path.read_bytes().splitlines(keepends=True)
    damaged = first + DAMAGE[damage] + b'\n' + second if where == 'middle' else first + second + DAMAGE[damage]
    path.write_bytes(damaged)
    line = 2 if where == 'middle' else 3
    assert logged_seeds(path) == [0, 1] and seeds_in(damaged, path) == {0, 1}
    assert reports_main(['summary', str(path)]) == 0
    assert 'n=2' in capsys.readouterr().out
    trial = run_trial(script, make_args(tmp_path, runs=2))
    assert trial.pending() == [(2, 2), (3, 3)]
    warnings = capsys.readouterr().err.splitlines()
    assert f'warning: {path} line {line} ' in warnings[0] and warnings[0].endswith('skipped, left in place')
    assert all(f'{path} line {line} ' in warning for warning in warnings)  # one line per read, no other
    data = path.read_bytes()
    assert data.startswith(damaged) and data.split(b'\n')[line - 1] == DAMAGE[damage]  # still a line of its own
    assert logged_seeds(path) == [0, 1, 2, 3]
    shard = run_trial(script, make_args(tmp_path, runs=5, shard='1/1')).path
    shard.write_bytes(shard.read_bytes() + DAMAGE[damage] + b'\n')
    assert 'added 1 rows' in merge_shards([shard])[0] and logged_seeds(path) == [0, 1, 2, 3, 4]


def test_each_damaged_line_gets_its_own_warning(script, tmp_path, capsys):
    path = run_trial(script, make_args(tmp_path, runs=1)).path
    path.write_bytes(b'junk\n' + path.read_bytes() + b'\xff\xfe\n' + b'\0' * 8)
    assert logged_seeds(path) == [0]
    assert [line.split(' is ')[0] for line in capsys.readouterr().err.splitlines()] == [
        f'warning: {path} line {n}' for n in (1, 3, 4)]


@pytest.mark.parametrize('content, message', [
    (b'\x89PNG\r\n\x1a\n\0\0', r'line 1 is not UTF-8 text .* this file is not a results log'),
    (b'seed,tta_val_acc\n\0\0\0\n{"script": "main0', r'line 1 is not JSON and no line is a results row'),
])
def test_a_file_of_damaged_lines_only_is_refused_unless_a_writer_left_them(script, tmp_path, content, message):
    path = log_path(tmp_path, 'main0_network.py', 'full', 'cpu-fp32')
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(UserError, match=message) as info:
        Trial(script, HYP, make_args(tmp_path))
    assert '\n' not in str(info.value) and path.read_bytes() == content
    with pytest.raises(UserError, match=message):
        append_row(path, {'seed': 0}, new_seed=True)
    assert path.read_bytes() == content
    # What a killed first writer leaves (a cut-short row, NUL bytes) is a log with no row yet, not a foreign file.
    path.write_bytes(b'{"script": "main0_net\0\0\0\n' + b'\0' * 64)
    assert run_trial(script, make_args(tmp_path)).pending() == [(0, 0)] and logged_seeds(path) == [0]


@pytest.mark.parametrize('key, value', [('tta_val_acc', 94.12), ('val_acc', 93.5), ('tta_val_acc', -0.1),
                                        ('val_acc', None), ('tta_val_acc', float('nan'))])
def test_an_accuracy_outside_zero_to_one_is_a_one_line_error(script, tmp_path, capsys, key, value):
    path = run_trial(script, make_args(tmp_path, runs=2)).path
    first, second = path.read_text().splitlines()
    content = first + '\n' + json.dumps({**json.loads(second), key: value}) + '\n'
    path.write_text(content)
    with pytest.raises(UserError, match=rf'{path} line 2: {key} is {json.dumps(value)}, not a fraction in \[0, 1\]'):
        read_rows(path)
    assert reports_main(['summary', str(path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f'error: {path} line 2: {key}') and err.count('\n') == 1
    with pytest.raises(UserError, match='not a fraction'):
        Trial(script, HYP, make_args(tmp_path))
    assert path.read_text() == content


def test_a_seed_logged_by_another_process_meanwhile_is_not_logged_twice(script, tmp_path, capsys):
    first, second = Trial(script, HYP, make_args(tmp_path, runs=2)), Trial(script, HYP, make_args(tmp_path, runs=2))
    for trial in (first, second):
        for run, seed in trial.pending():
            trial.record(fake_result(run, seed))
    assert logged_seeds(first.path) == [0, 1]
    assert 'seed 0 is already in' in capsys.readouterr().err


@pytest.mark.parametrize('flags, message', [
    (dict(runs=0), '--runs must be'), (dict(runs=-3), '--runs must be'),
    (dict(shard='0/4'), '--shard must be K/N'), (dict(shard='5/4'), '--shard must be K/N'),
    (dict(shard='a/b'), '--shard must be K/N'), (dict(shard='1/0'), '--shard must be K/N'),
    (dict(gpus='all'), 'needs CUDA GPUs'), (dict(gpus='0'), 'needs CUDA GPUs'),
])
def test_bad_run_flags_are_one_line_errors(script, tmp_path, flags, message):
    with pytest.raises(UserError, match=message) as info:
        Trial(script, HYP, make_args(tmp_path, **flags))
    assert '\n' not in str(info.value)
    assert not (tmp_path / 'main0_network').exists()


def test_gpu_lists_and_child_command_lines():
    assert parse_gpus('all', 3) == [0, 1, 2] and parse_gpus('2,0', 3) == [2, 0]
    for bad in ('0,0', '3', 'x', '0,'):
        with pytest.raises(UserError, match='--gpus'):
            parse_gpus(bad, 3)
    assert strip_gpus_flag(['--runs', '4', '--gpus', 'all', '--lr', '3']) == ['--runs', '4', '--lr', '3']
    assert strip_gpus_flag(['--gpus=0,1', '--ternary']) == ['--ternary']


def append_many(path, worker):
    for i in range(40):
        append_row(path, {'worker': worker, 'i': i, 'padding': 'x' * 20_000})


def test_concurrent_appends_never_interleave(tmp_path):
    path = tmp_path / 'shared.jsonl'
    context = multiprocessing.get_context('fork')
    workers = [context.Process(target=append_many, args=(path, w)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted((row['worker'], row['i']) for row in rows) == [(w, i) for w in range(4) for i in range(40)]


CHILD = '''"""main0_network.py: a stand-in rung whose two "GPUs" are faked, so --gpus runs on the CPU."""
import os, sys
sys.path.insert(0, {root!r})
import airbench, ternary
import common.provenance, stats.trial
from common.flags import parse_flags
stats.trial.cuda_gpu_names = lambda device: ['Fake GPU', 'Fake GPU']
common.provenance.device_name = lambda device: 'Fake GPU'
hyp, args = parse_flags({hyp!r}, (stats.FLAGS, ternary.FLAGS, airbench.FLAGS), sys.argv[1:])
trial = stats.Trial(__file__, hyp, args)
if trial.delegate_to_gpus():
    sys.exit(0)
for run, seed in trial.pending():
    trial.record(dict(run=run, seed=seed, epochs=1.0, val_acc=0.9, tta_val_acc=0.95, time_seconds=1.0,
                      peak_memory_bytes=None, gpu=os.environ['CUDA_VISIBLE_DEVICES']))
trial.report()
'''


def test_gpus_runs_one_child_per_gpu_into_one_log(tmp_path):
    script = tmp_path / 'main0_network.py'
    script.write_text(CHILD.format(root=str(ROOT), hyp=HYP))
    argv = ['--device', 'cpu', '--out', str(tmp_path / 'out'), '--runs', '5', '--gpus', 'all']
    proc = subprocess.run([sys.executable, str(script), *argv], capture_output=True, text=True, timeout=300,
                          env={k: v for k, v in os.environ.items() if k != 'CUDA_VISIBLE_DEVICES'})
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_rows(tmp_path / 'out' / 'main0_network' / 'full__fake-gpu-fp32.jsonl')
    assert sorted((row['seed'], row['gpu']) for row in rows) == [(0, '0'), (1, '1'), (2, '0'), (3, '1'), (4, '0')]
    assert proc.stdout.count('verdict: ') == 3  # each child, then the parent over the whole log
    assert 'n=5' in proc.stdout.split('verdict: ')[-2]


@pytest.mark.skipif(shutil.which('git') is None, reason='needs git')
def test_git_commit_marks_a_dirty_tree_but_not_the_results_logs(tmp_path):
    from common.provenance import git_commit

    def git(*argv):
        return subprocess.run(['git', '-C', str(tmp_path), '-c', 'user.name=t', '-c', 'user.email=t@t', *argv],
                              capture_output=True, text=True, check=True).stdout.strip()
    git('init', '-q')
    (tmp_path / 'main0_network.py').write_text('x = 1\n')
    (tmp_path / 'results').mkdir()
    (tmp_path / 'results' / 'log.jsonl').write_text('{}\n')
    git('add', '.')
    git('commit', '-q', '-m', 'rung')
    commit = git('rev-parse', '--short', 'HEAD')
    assert git_commit(tmp_path, tmp_path / 'results') == commit
    (tmp_path / 'results' / 'log.jsonl').write_text('{}\n{}\n')  # a run appended to a tracked log
    assert git_commit(tmp_path, tmp_path / 'results') == commit
    (tmp_path / 'main0_network.py').write_text('x = 2\n')
    assert git_commit(tmp_path, tmp_path / 'results') == commit + '+dirty'
    assert git_commit(tmp_path.parent / 'nowhere', None) == 'unknown'


def test_the_report_says_when_the_log_pools_another_version_of_the_script(script, tmp_path, capsys):
    run_trial(script, make_args(tmp_path, runs=2)).report()
    assert 'another version' not in capsys.readouterr().out
    script.write_text(script.read_text() + '# edited\n')
    run_trial(script, make_args(tmp_path, runs=1)).report()
    assert '(2 rows ran another version of main0_network.py or of torch/CUDA/Triton)' in capsys.readouterr().out
