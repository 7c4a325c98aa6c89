"""The README table, the figure and the `python -m reports` command line, on small fixture logs."""
import importlib.util
import json
import re
import warnings

import pytest

from common.errors import UserError
from reports.__main__ import main as reports_main
from reports.table import BEGIN, EMPTY, END, LADDER_BEGIN, LADDER_END, format_verdict, make_block, update_readme
from stats.summary import describe

README = f'# Project\n\nintro\n\n{BEGIN}\n{EMPTY}\n{END}\n\nafter the table\n'


def write_log(results, script, variant, hardware, accuracies, seconds=2.0, device='NVIDIA Test GPU', epochs=9.9):
    path = results / script.removesuffix('.py') / f'{variant}__{hardware}.jsonl'
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'a') as f:
        for seed, acc in enumerate(accuracies):
            row = dict(script=script, variant=variant, run=seed, seed=seed, epochs=epochs, val_acc=acc - 0.01,
                       tta_val_acc=acc, time_seconds=seconds + seed, peak_memory_bytes=1, device=device,
                       hyp={'opt': {'epochs': epochs}}, args={'ternary': variant.startswith('ternary')})
            f.write(json.dumps(row) + '\n')
    return path


@pytest.fixture
def results(tmp_path):
    results = tmp_path / 'results'
    write_log(results, 'train_resnet18.py', 'full', 'test-gpu', [0.9405], epochs=26)
    write_log(results, 'main1_whiten.py', 'full', 'test-gpu', [0.93, 0.95], epochs=21)
    write_log(results, 'main0_network.py', 'full', 'test-gpu', [0.94, 0.95, 0.96])
    write_log(results, 'main0_network.py', 'ternary', 'test-gpu', [0.92, 0.93])
    write_log(results, 'main0_network.py', 'full', 'other-gpu', [0.90, 0.91], device='Other GPU')
    write_log(results, 'main0_network.py', 'full', 'cpu', [0.10, 0.11], device='cpu')
    write_log(results, 'main0_network.py', 'full', 'test-gpu.shard-1-of-2', [0.5, 0.5])
    return results


def table_rows(block, heading):
    """{first cell: cells} of the table under `heading`."""
    section = block.split(heading)[1].split('**')[0]
    rows = [line.strip('|').split(' | ') for line in section.splitlines() if line.startswith('| `')]
    return {cells[0].strip(): [cell.strip() for cell in cells] for cells in rows}


def test_one_table_per_gpu_in_ladder_order(results):
    block = make_block(results)
    assert block.index('**Other GPU** (`other-gpu`)') < block.index('**NVIDIA Test GPU** (`test-gpu`)')
    rows = table_rows(block, '**NVIDIA Test GPU**')
    assert list(rows) == ['`main0_network.py`', '`main1_whiten.py`', '`train_resnet18.py`']
    main0 = rows['`main0_network.py`']
    # n = 3, mean 95.00%, s = 1 point: CI 95 -+ t(0.975; 2) / sqrt(3) = 95 -+ 4.3027 / 1.7321 = 95 -+ 2.48;
    # t = (95 - 94) / (1 / sqrt(3)) = sqrt(3), and with 2 dof p = 1/2 - t / (2 sqrt(2 + t^2)) = 0.113.
    assert main0[2:] == ['9.9', '3.00', '95.00% (92.52 to 97.48)', '3', '92.50% (2)', '-2.50', 'no, p=0.11']
    assert rows['`train_resnet18.py`'][4:6] == ['94.05%', '1'] and rows['`train_resnet18.py`'][-1] == 'n < 2'
    assert rows['`main1_whiten.py`'][1].startswith('first conv initialised')
    assert '90.50%' in table_rows(block, '**Other GPU**')['`main0_network.py`'][4]
    assert '0.10' not in block and '50.00%' not in block  # the CPU log and the unmerged shard are left out


def write_cpu_log(results, script, hardware, accuracies, epochs=9.9, subset=0, net=None, cpu_info=None,
                  minutes=60.0, first_seed=0):
    """A CPU log of one run per accuracy; net: the rows' hyp['net'] (None: an old row without one)."""
    path = results / script.removesuffix('.py') / f'full__{hardware}.jsonl'
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, 'a') as f:
        for seed, acc in enumerate(accuracies, start=first_seed):
            row = dict(script=script, variant='full', run=seed, seed=seed, epochs=epochs, val_acc=acc, tta_val_acc=acc,
                       time_seconds=60 * minutes, peak_memory_bytes=None, device='cpu',
                       hyp={'opt': {'epochs': epochs}, **({'net': net} if net else {})},
                       args={'ternary': False, 'subset': subset}, **({'cpu_info': cpu_info} if cpu_info else {}))
            f.write(json.dumps(row) + '\n')
    return path


def test_full_length_cpu_logs_are_a_table_of_their_own_and_smoke_runs_are_left_out(results):
    write_cpu_log(results, 'main7_mirror.py', 'cpu-fp32', [0.9402])  # an old row: no dtype, no cpu_info
    write_cpu_log(results, 'main7_mirror.py', 'cpu-bf16', [0.939, 0.941, 0.943], net={'dtype': 'bf16'},
                  cpu_info={'model': 'Test CPU'}, minutes=50.0)
    write_cpu_log(results, 'main7_mirror.py', 'cpu-bf16', [0.5], subset=1000, net={'dtype': 'bf16'})  # a smoke run
    write_cpu_log(results, 'main7_mirror.py', 'cpu-bf16', [0.6], epochs=1.0, net={'dtype': 'bf16'})   # another
    write_cpu_log(results, 'main6_tta.py', 'cpu-fp32', [0.7, 0.7], epochs=2.0)  # only smoke runs: no row
    block = make_block(results)
    assert block.index('**NVIDIA Test GPU**') < block.index('**CPU evidence** (accuracy only; times not comparable')
    rows = table_rows(block, '**CPU evidence**')
    cpu_rows = [line for line in block.split('**CPU evidence**')[1].splitlines() if line.startswith('| `')]
    assert len(cpu_rows) == 2 and list(rows) == ['`main7_mirror.py`']  # one row per log: bf16 first, by name
    bf16 = [cell.strip() for cell in cpu_rows[0].strip('|').split(' | ')]
    # n = 3, mean 94.10%, s = 0.2 points: CI 94.1 -+ 4.3027 * 0.2 / sqrt(3) = 94.1 -+ 0.50; t = 0.1 / (0.2 /
    # sqrt(3)) = 0.866, and with 2 dof p = 1/2 - t / (2 sqrt(2 + t^2)) = 0.239.
    assert bf16 == ['`main7_mirror.py`', 'full', 'bf16', 'Test CPU', '3', '94.10%', '93.60 to 94.60',
                    '2/3 (67%)', 'no, p=0.24', '50.0']
    assert rows['`main7_mirror.py`'][2:] == ['fp32', 'unknown', '1', '94.02%', '', '1/1 (100%)', 'n < 2', '60.0']
    assert '50.00%' not in block and '60.00%' not in block and 'main6_tta' not in block
    assert '0.10' not in block  # main0's CPU log holds 9.9-epoch runs; its own hyp says 35: a smoke test


def test_a_cpu_log_of_several_cpu_models_pools_accuracy_but_gives_each_ones_times(tmp_path):
    write_cpu_log(tmp_path, 'main7_mirror.py', 'cpu-bf16', [0.939, 0.941], net={'dtype': 'bf16'},
                  cpu_info={'model': 'Slow CPU'}, minutes=24.0)
    write_cpu_log(tmp_path, 'main7_mirror.py', 'cpu-bf16', [0.943], net={'dtype': 'bf16'},
                  cpu_info={'model': 'Fast CPU'}, minutes=8.0, first_seed=2)
    [row] = table_rows(make_block(tmp_path), '**CPU evidence**').values()
    assert row[3:6] == ['Fast CPU (1 run), Slow CPU (2 runs)', '3', '94.10%']  # one pool of three runs
    assert row[-1] == '8.0 (Fast CPU), 24.0 (Slow CPU)'  # not the pooled median, 24.0, of one CPU alone


def test_cpu_evidence_alone_says_no_gpu_measured_it_yet(tmp_path):
    write_cpu_log(tmp_path, 'main7_mirror.py', 'cpu-bf16', [0.94, 0.95], net={'dtype': 'bf16'})
    block = make_block(tmp_path)
    assert block.startswith('Nothing measured on a GPU yet') and '**CPU evidence**' in block


def test_cpu_logs_join_the_device_tables_only_on_request(results):
    assert '**cpu**' in make_block(results, include_cpu=True)
    empty = results.parent / 'empty'
    empty.mkdir()
    assert make_block(empty) == EMPTY
    with pytest.raises(UserError, match='not a folder'):
        make_block(results.parent / 'missing')


def test_a_test_passed_at_fewer_runs_than_a_claim_takes_says_so():
    def verdict(accuracies):
        return format_verdict(describe([dict(tta_val_acc=acc, time_seconds=1.0) for acc in accuracies]))
    passing = [0.9420, 0.9425, 0.9430, 0.9418]
    assert re.fullmatch(r'yes, p[=<][0-9.e-]+, but n < 10', verdict(passing))
    assert re.fullmatch(r'yes, p[=<][0-9.e-]+', verdict(passing * 3))  # n = 12
    assert re.fullmatch(r'no, p=[0-9.]+', verdict([0.9390, 0.9410]))


def test_readme_block_is_replaced_and_check_detects_staleness(results, tmp_path, capsys):
    readme = tmp_path / 'README.md'
    readme.write_text(README)
    assert reports_main(['table', '--check', '--results', str(results), '--readme', str(readme)]) == 1
    assert readme.read_text() == README and 'stale' in capsys.readouterr().out
    assert update_readme(results, readme) is True
    text = readme.read_text()
    assert text.startswith(f'# Project\n\nintro\n\n{BEGIN}\n**') and text.endswith(f'\n{END}\n\nafter the table\n')
    assert EMPTY not in text and '95.00%' in text
    assert reports_main(['table', '--check', '--results', str(results), '--readme', str(readme)]) == 0
    write_log(results, 'main2_dirac.py', 'full', 'test-gpu', [0.95, 0.96])
    assert reports_main(['table', '--check', '--results', str(results), '--readme', str(readme)]) == 1
    assert readme.read_text() == text


def test_the_ladder_block_is_rewritten_when_its_markers_are_there(results, tmp_path):
    readme = tmp_path / 'README.md'
    readme.write_text(README + f'\n## The ladder\n\n{LADDER_BEGIN}\nold\n{LADDER_END}\n\nafter the ladder\n')
    assert update_readme(results, readme) is True
    text = readme.read_text()
    ladder = text.split(LADDER_BEGIN)[1].split(LADDER_END)[0]
    assert '| `main4_freeze.py` | whitening-conv bias trained for 3 epochs, then frozen | 13.5 | not counted |' \
        in ladder  # the results folder holds no flops.json
    assert 'old' not in ladder and text.endswith(f'{LADDER_END}\n\nafter the ladder\n') and '95.00%' in text
    assert update_readme(results, readme, check=True) is False


def test_readme_without_markers_is_refused(results, tmp_path):
    readme = tmp_path / 'README.md'
    readme.write_text('# no markers\n')
    with pytest.raises(UserError, match='reports:table:begin'):
        update_readme(results, readme)


def test_figure_is_written_or_matplotlib_is_named(results, tmp_path, capsys):
    out = tmp_path / 'ladder.png'
    code = reports_main(['figure', '--results', str(results), '--out', str(out)])
    if importlib.util.find_spec('matplotlib') is None:
        assert code == 1 and capsys.readouterr().err == 'error: matplotlib is not installed: pip install matplotlib\n'
        assert not out.exists()
    else:
        assert code == 0 and out.read_bytes().startswith(b'\x89PNG')


def test_summary_and_compare_commands(results, capsys):
    full = results / 'main0_network' / 'full__test-gpu.jsonl'
    ternary = results / 'main0_network' / 'ternary__test-gpu.jsonl'
    assert reports_main(['summary', str(full)]) == 0
    out = capsys.readouterr().out
    assert 'n=3, mean 95.00%' in out and 'verdict: mean >= 94% not shown' in out
    assert reports_main(['summary', str(full), '--seeds', '1-2']) == 0  # the seeds' accuracies: 0.95, 0.96
    assert f'{full} (seeds 1 to 2): n=2, mean 95.50%' in capsys.readouterr().out
    assert reports_main(['compare', str(full), str(ternary)]) == 0
    out = capsys.readouterr().out
    assert 'B - A: -2.50 points' in out and 'note: A ran on' not in out
    assert reports_main(['compare', str(full), str(results / 'main0_network' / 'full__other-gpu.jsonl')]) == 0
    assert 'note: A ran on NVIDIA Test GPU, B on Other GPU: the time ratio compares devices' in capsys.readouterr().out


@pytest.mark.parametrize('argv, message', [
    (['bogus'], "invalid choice: 'bogus'"),
    (['table', '--bogus'], 'unrecognized arguments: --bogus'),
    (['summary', 'no/such.jsonl'], 'no/such.jsonl does not exist: pass a log under results/'),
    (['merge', 'results/x/full__h100.jsonl'], 'is not a shard log'),
    (['summary', 'x.jsonl', '--seeds', '2..9'], "argument --seeds: expected FIRST-LAST (seeds, e.g. 2-9) or one seed"),
    (['summary', 'x.jsonl', '--seeds', '9-2'], "argument --seeds: expected FIRST <= LAST, got '9-2'"),
])
def test_bad_command_lines_are_one_line_errors(argv, message, capsys):
    assert reports_main(argv) != 0
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1 and message in err


def test_a_scripts_log_folder_given_as_results_is_refused_not_tabled_as_empty(results, tmp_path, capsys):
    readme = tmp_path / 'README.md'
    readme.write_text(README)
    update_readme(results, readme)
    before = readme.read_text()
    folder = results / 'main0_network'
    for argv in (['table', '--results', str(folder), '--readme', str(readme)], ['table', '--check', '--results',
                                                                                  str(folder), '--readme', str(readme)]):
        assert reports_main(argv) == 1
        assert capsys.readouterr().err == (f"error: {folder} holds logs itself, as one script's folder does: pass the "
                                           f'results folder above it, --results {results}\n')
    assert readme.read_text() == before


def test_a_results_folder_without_logs_is_refused_and_the_readme_kept(results, tmp_path, capsys):
    readme = tmp_path / 'README.md'
    readme.write_text(README)
    update_readme(results, readme)
    before = readme.read_text()
    empty = tmp_path / 'typo'
    (empty / 'main0_network').mkdir(parents=True)  # folders, but no log in them
    for argv in (['table', '--results', str(empty), '--readme', str(readme)], ['table', '--check', '--results',
                                                                                 str(empty), '--readme', str(readme)]):
        assert reports_main(argv) == 1
        err = capsys.readouterr().err
        assert err.startswith(f'error: {empty} holds no run logs') and err.count('\n') == 1
    assert readme.read_text() == before
    (results / 'flops.json').write_text('{}')  # a folder with the FLOP counts alone is a real one
    for path in results.glob('*/*.jsonl'):
        path.unlink()
    assert reports_main(['table', '--results', str(results), '--readme', str(readme)]) == 0


def test_a_seed_range_a_log_lacks_is_refused(results, capsys):
    full = results / 'main0_network' / 'full__test-gpu.jsonl'
    assert reports_main(['summary', str(full), '--seeds', '5-9']) != 0
    assert capsys.readouterr().err == (f'error: {full} holds no runs of seeds 5 to 9: pass a range that its seeds '
                                       'fall in\n')


def test_a_log_compared_with_itself_is_said_to_be(results, capsys):
    full = str(results / 'main0_network' / 'full__test-gpu.jsonl')
    assert reports_main(['compare', full, full]) == 0
    assert f'note: A and B are the same log, {full}' in capsys.readouterr().out


def test_the_figure_draws_every_variant(results, tmp_path):
    pytest.importorskip('matplotlib')
    write_log(results, 'main0_network.py', 'ternary-kd', 'test-gpu', [0.93, 0.94])
    write_log(results, 'main1_whiten.py', 'lr12', 'lone-gpu', [0.93, 0.94])  # a device with no full log
    import matplotlib.axes
    drawn = []
    original = matplotlib.axes.Axes.errorbar

    def errorbar(self, *args, label=None, **kwargs):
        drawn.append(label)
        return original(self, *args, label=label, **kwargs)
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        warnings.simplefilter('error')  # an empty panel's legend warns: "No artists with labels"
        patch.setattr(matplotlib.axes.Axes, 'errorbar', errorbar)
        assert reports_main(['figure', '--results', str(results), '--out', str(tmp_path / 'f.png')]) == 0
    assert sorted(drawn) == ['full', 'full', 'lr12', 'ternary', 'ternary-kd']


def test_the_gap_follows_the_ternary_flag_and_ternary94_is_compared_with_its_parent(results):
    write_log(results, 'main8_compile.py', 'full', 'test-gpu', [0.94, 0.95])
    write_log(results, 'ternary94.py', 'ternary', 'test-gpu', [0.93, 0.94])
    write_log(results, 'main0_network.py', 'lr12', 'test-gpu', [0.90, 0.91])  # full precision, own name
    tern_lr = write_log(results, 'main0_network.py', 'tern-lr12', 'test-gpu', [0.89, 0.91])
    tern_lr.write_text(tern_lr.read_text().replace('"ternary": false', '"ternary": true'))
    rows = table_rows(make_block(results), '**NVIDIA Test GPU**')
    assert rows['`ternary94.py` (ternary)'][6:8] == ['', '-1.00']  # 93.50 against main8's 94.50
    assert rows['`main0_network.py` (tern-lr12)'][7] == '-5.00'  # 90.00 against main0's full 95.00
    assert rows['`main0_network.py` (lr12)'][7] == ''


def write_step_bench(results, name, rows):
    path = results / 'bench' / f'step__{name}.jsonl'
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(''.join(json.dumps(row) + '\n' for row in rows) + '{"benchmark": "st\n')  # a cut-short line
    return path


def step_bench_row(date, device, fp32, bf16, cap=None, cpu_info=None):
    settings = dict(script='main7_mirror.py', batch_size=1024, steps=5, onednn_max_cpu_isa=cap)
    measurements = dict(fp32_seconds_per_step=fp32, bf16_seconds_per_step=bf16, fp32_over_bf16=fp32 / bf16)
    return dict(benchmark='step', settings=settings, measurements=measurements, date=date, device=device,
                cpu_info=cpu_info or {})


def test_the_step_benchmark_table_names_the_machine_and_its_ratio(results, capsys):
    assert 'Step benchmark' not in make_block(results)
    epyc = dict(model='AMD EPYC', torch_isa='AVX512', amx_bf16=False, cores=2)
    path = write_step_bench(results, 'cpu', [step_bench_row('2026-12-04T01:00:00+00:00', 'cpu', 5.5, 68.0, 'AVX2', epyc),
                                            step_bench_row('2026-12-03T01:00:00+00:00', 'cpu', 4.5, 2.5, None, epyc)])
    write_step_bench(results, 'nvidia-test-gpu', [step_bench_row('2026-12-05T01:00:00+00:00', 'NVIDIA Test GPU',
                                                                 0.03, 0.01)])
    block = make_block(results)
    section = block.split('**Step benchmark**')[1]
    rows = [[cell.strip() for cell in line.strip('|').split(' | ')] for line in section.splitlines()
            if line.startswith('| `')]
    assert rows == [  # oldest first
        ['`main7_mirror.py`', '1024', 'CPU: AMD EPYC, 2 cores', 'AVX512', 'no', '4.500', '2.500', '1.80x', '5',
         '2026-12-03'],
        ['`main7_mirror.py`', '1024', 'CPU: AMD EPYC, 2 cores', 'AVX512 (oneDNN capped at AVX2)', 'no', '5.500',
         '68.000', '0.08x', '5', '2026-12-04'],
        ['`main7_mirror.py`', '1024', 'NVIDIA Test GPU', '', '', '0.030', '0.010', '3.00x', '5', '2026-12-05']]
    assert f'warning: {path} line 3 is not a benchmark row' in capsys.readouterr().err
