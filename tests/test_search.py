"""`python -m reports search`: ternary94.py's search log, one line per log, from rows as a run writes them."""
import contextlib
import io
import json

import pytest

import reports.search as search
from common.errors import UserError
from common.flags import parse_flags
from common.provenance import file_sha256
from reports.__main__ import main as reports_main
from reports.sidebyside import import_script
from reports.logs import ROOT
from stats.trial import config_args

TINY = ['--block1', '8', '--block2', '16', '--block3', '16', '--batch-size', '500']  # counted in about a second


@pytest.fixture(scope='module')
def rung():
    return import_script(ROOT / 'ternary94.py', 'test_search_ternary94')


def logged_rows(rung, argv, accuracies, variant):
    """Rows as ternary94.py logs them for `argv` (its own defaults, ternary on, resolved for a bf16 CPU run)."""
    with contextlib.redirect_stdout(io.StringIO()):
        hyp, args = parse_flags(rung.hyp, rung.FLAGS, ['--device', 'cpu', '--dtype', 'bf16', *argv],
                                defaults=rung.RUN_DEFAULTS)
    return [dict(script='ternary94.py', variant=variant, seed=seed, hyp=hyp, args=config_args(args), device='cpu',
                 epochs=hyp['opt']['epochs'], tta_val_acc=acc, time_seconds=60.0, date=f'2026-12-0{seed + 1}T10:00',
                 script_sha256=file_sha256(ROOT / 'ternary94.py'))
            for seed, acc in enumerate(accuracies)]


def write_log(results, variant, rows):
    path = results / 'ternary94' / f'{variant}__cpu-bf16.jsonl'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join(json.dumps(row) + '\n' for row in rows))


def table_lines(results):
    text = (results / 'ternary94' / 'README.md').read_text()
    block = text[text.index(search.BEGIN):text.index(search.END)]
    return [[cell.strip() for cell in line.split('|')[1:-1]] for line in block.splitlines()[3:]]


def test_one_line_per_log_cheapest_first_with_its_config_as_flags(rung, tmp_path):
    # epochs within whiten_bias_epochs (3): every step trains the whitening bias, so the step costs are equal
    write_log(tmp_path, 'long', logged_rows(rung, [*TINY, '--epochs', '2'], [0.9410, 0.9420], 'long'))
    write_log(tmp_path, 'short-pc', logged_rows(rung, [*TINY, '--epochs', '1', '--ternary-per-channel'],
                                                [0.9300, 0.9310], 'short-pc'))
    smoke = logged_rows(rung, [*TINY, '--epochs', '1', '--subset', '2000'], [0.5], 'smoke')
    write_log(tmp_path, 'smoke', smoke)  # smoke runs are no evidence: left out
    readme, stale = search.update_search_log(tmp_path, ROOT)
    assert stale and readme == tmp_path / 'ternary94' / 'README.md'
    short, long = table_lines(tmp_path)
    assert [short[0], long[0]] == ['short-pc', 'long']
    # the counts are kept beside the logs, by config: --epochs=1.0 sorts first
    counts = json.loads((tmp_path / 'ternary94' / 'flops.json').read_text())
    short_count, long_count = (counts[key] for key in sorted(counts))
    assert float(short[2]) == round(short_count['total_tflops'], 1)
    assert float(long[2]) == round(long_count['total_tflops'], 1)
    assert long_count['train_tflops'] == pytest.approx(2 * short_count['train_tflops'], rel=0.05)  # twice the epochs
    assert long_count['eval_tflops'] == short_count['eval_tflops']
    assert '`--epochs=1.0`' in short[1] and '`--ternary-per-channel=true`' in short[1] and '--subset' not in short[1]
    assert (short[5], short[6], short[7], long[7]) == ('2', '0', '93.05%', '94.15%')
    assert long[10] == '2026-12-01 to 2026-12-02' and 'another version' not in long[1]
    packed, fp32 = (float(x) for x in short[3].replace('(', '').replace(')', '').split())
    assert packed < fp32 / 4  # 2 bits a ternary weight; per-channel scales cost a few bytes more than one per layer
    assert float(long[3].split()[0]) < packed


def test_a_line_reruns_as_it_reads(rung, tmp_path):
    """The config cell, fed back to the script's flags, gives the logged hyp and run flags."""
    rows = logged_rows(rung, [*TINY, '--epochs', '3', '--lr', '9', '--ternary-acts', '8'], [0.93, 0.94], 'acts')
    write_log(tmp_path, 'acts', rows)
    search.update_search_log(tmp_path, ROOT)
    [line] = table_lines(tmp_path)
    argv = [flag.strip('`') for flag in line[1].split()]
    assert [row['hyp'] for row in logged_rows(rung, argv, [0.9], 'again')] == [rows[0]['hyp']]
    assert logged_rows(rung, argv, [0.9], 'again')[0]['args'] == rows[0]['args']


def test_counts_are_kept_and_the_rest_of_the_file_too(rung, tmp_path, monkeypatch, capsys):
    write_log(tmp_path, 'kd', logged_rows(rung, [*TINY, '--epochs', '1', '--teacher', '/x/fp.pt'], [0.93], 'kd'))
    write_log(tmp_path, 'plain', logged_rows(rung, [*TINY, '--epochs', '2'], [0.93], 'plain'))
    old_count = {'ternary94.py@000000000000 --epochs=2.0': {'total_tflops': 1.0}}  # another version's: dropped
    (tmp_path / 'ternary94' / 'flops.json').write_text(json.dumps(old_count))
    readme, _ = search.update_search_log(tmp_path, ROOT)
    today = 'ternary94.py@' + file_sha256(ROOT / 'ternary94.py')[:12]
    assert {key.split()[0] for key in json.loads((tmp_path / 'ternary94' / 'flops.json').read_text())} == {today}
    plain, kd = table_lines(tmp_path)  # a teacher's work is not in the count: its line comes last, however cheap
    assert kd[2].endswith('+ teacher') and float(kd[2].split()[0]) < float(plain[2])
    assert '`--teacher=/x/fp.pt`' in kd[1] and kd[9] == 'n < 2'  # the path as logged: the line reruns
    readme.write_text('my notes\n' + readme.read_text() + 'more notes\n')
    monkeypatch.setattr(search, 'count_script', lambda *a: pytest.fail('counted again'))
    assert reports_main(['search', '--results', str(tmp_path), '--root', str(ROOT), '--check']) == 0
    assert 'up to date' in capsys.readouterr().out
    write_log(tmp_path, 'kd', logged_rows(rung, [*TINY, '--epochs', '1', '--teacher', '/x/fp.pt'], [0.93, 0.95], 'kd'))
    write_log(tmp_path, 'new', logged_rows(rung, [*TINY, '--epochs', '3'], [0.93], 'new'))  # --check counts nothing
    assert reports_main(['search', '--results', str(tmp_path), '--root', str(ROOT), '--check']) == 1
    (tmp_path / 'ternary94' / 'new__cpu-bf16.jsonl').unlink()
    assert reports_main(['search', '--results', str(tmp_path), '--root', str(ROOT)]) == 0
    text = readme.read_text()
    assert text.startswith('my notes\n') and text.endswith('more notes\n') and table_lines(tmp_path)[1][5] == '2'


def test_a_line_logged_by_another_version_of_the_script_says_so(rung, tmp_path):
    rows = logged_rows(rung, [*TINY, '--epochs', '1'], [0.93], 'old')
    write_log(tmp_path, 'old', [dict(rows[0], script_sha256='0' * 64)])
    search.update_search_log(tmp_path, ROOT)
    [line] = table_lines(tmp_path)
    assert line[1].endswith("(logged by another version of ternary94.py: TFLOPs and size are of today's)")


def test_a_line_logged_before_a_leaf_existed_names_it_and_still_gets_its_size(rung, tmp_path):
    argv = [*TINY, '--epochs', '1']
    [row] = logged_rows(rung, argv, [0.93], 'older')
    del row['hyp']['net']['dirac'], row['hyp']['opt']['filter_lr']  # as 57d58cf logged them: no such leaves yet
    write_log(tmp_path, 'older', [dict(row, script_sha256='0' * 64)])
    write_log(tmp_path, 'today', logged_rows(rung, argv, [0.93], 'today'))
    search.update_search_log(tmp_path, ROOT)
    older, today = table_lines(tmp_path)
    # dirac init was on before its leaf existed (stats.log.LEAVES_BEFORE), and is off by default today
    assert older[1] == today[1] + (' `--dirac=true` (logged by another version of ternary94.py, before --filter-lr, '
                                   "--dirac: TFLOPs and size are of today's)")
    assert older[2:4] == today[2:4]  # TFLOPs and sizes of today's same net
    # a log whose rows differ: the leaves any row lacks, and a leaf today's script no longer has
    newer = logged_rows(rung, argv, [0.94], 'older')[0]
    newer['hyp']['opt']['gone_leaf'] = 1.0
    write_log(tmp_path, 'older', [newer, dict(row, seed=1, script_sha256='0' * 64)])
    search.update_search_log(tmp_path, ROOT)
    assert table_lines(tmp_path)[0][1].endswith(", before --filter-lr, --dirac, with --gone-leaf: TFLOPs and size "
                                                "are of today's)")


def test_a_leaf_a_row_lacks_reads_as_what_that_row_ran_not_as_todays_default(rung, monkeypatch):
    from reports import logs  # the README's CPU table counts a row as the defaults' only if every leaf matches
    defaults = logs.hyp_defaults(ROOT / 'ternary94.py')
    [row] = logged_rows(rung, [], [0.94], 'ternary')
    assert logs.is_full_length(row, defaults, 'ternary94.py')
    del row['hyp']['net']['dirac']  # logged before the leaf existed, when every run had dirac init
    assert not logs.is_full_length(row, defaults, 'ternary94.py')
    from stats.log import LEAVES_BEFORE
    monkeypatch.setitem(LEAVES_BEFORE, 'ternary94.py', {('net', 'dirac'): False})  # had they run without it
    assert logs.is_full_length(row, defaults, 'ternary94.py')


def write_divergences(results, variant, rows):
    """Records as stats.Trial writes them for diverged runs (stats/diverged.py): a row's fields less the results."""
    path = results / 'ternary94' / 'diverged' / f'{variant}__cpu-bf16.jsonl'
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [{key: value for key, value in row.items() if key not in ('epochs', 'tta_val_acc', 'time_seconds')}
               for row in rows]
    path.write_text(''.join(json.dumps(dict(record, run=record['seed'], diverged='its training loss is nan at '
                                            'epoch 1')) + '\n' for record in records))


def test_diverged_runs_are_listed_and_a_config_that_only_diverged_has_its_own_line(rung, tmp_path):
    rows = logged_rows(rung, [*TINY, '--epochs', '2'], [0.94, 0.95, 0.96, 0.97], 'some')
    write_log(tmp_path, 'some', [rows[0], rows[3]])
    write_divergences(tmp_path, 'some', [rows[1], rows[2]])
    write_divergences(tmp_path, 'all', logged_rows(rung, [*TINY, '--epochs', '1', '--lr', '1e9'], [0.9], 'all'))
    search.update_search_log(tmp_path, ROOT)
    every, some = table_lines(tmp_path)  # the cheaper first, as any line
    assert (some[0], some[5], some[6], some[7]) == ('some', '2', '2 (seeds 1, 2)', '95.50%')  # 94% and 97% only
    assert some[10] == '2026-12-01 to 2026-12-04'
    assert (every[0], every[5], every[6], every[7], every[8], every[9]) == ('all', '0', '1 (seed 0)', '-', 'n/a',
                                                                             'n < 2')
    assert '`--lr=1000000000.0`' in every[1] and float(every[2]) > 0  # its config and cost, from the record


def test_nothing_logged_yet_a_missing_results_folder_and_a_folder_in_the_readmes_place(tmp_path, capsys):
    assert reports_main(['search', '--results', str(tmp_path / 'typo')]) == 1
    assert capsys.readouterr().err == f'error: --results {tmp_path / "typo"} is not a folder: pass the folder of the ' \
                                      'logs (default results)\n' and not (tmp_path / 'typo').exists()
    readme, stale = search.update_search_log(tmp_path, ROOT)
    assert stale and 'Nothing measured yet' in readme.read_text() and readme.read_text().startswith('# The ternary94')
    readme.unlink()
    readme.mkdir()
    with pytest.raises(UserError, match='is a folder'):
        search.update_search_log(tmp_path, ROOT)
