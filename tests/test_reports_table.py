"""The README table, the figure and the `python -m reports` command line, on small fixture logs."""
import importlib.util
import json

import pytest

from common.errors import UserError
from reports.__main__ import main as reports_main
from reports.table import BEGIN, EMPTY, END, make_block, update_readme

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


def test_cpu_logs_only_on_request(results):
    assert '**cpu**' in make_block(results, include_cpu=True)
    empty = results.parent / 'empty'
    empty.mkdir()
    assert make_block(empty) == EMPTY
    with pytest.raises(UserError, match='not a folder'):
        make_block(results.parent / 'missing')


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
    assert reports_main(['compare', str(full), str(ternary)]) == 0
    out = capsys.readouterr().out
    assert 'B - A: -2.50 points' in out and 'note: A ran on' not in out
    assert reports_main(['compare', str(full), str(results / 'main0_network' / 'full__other-gpu.jsonl')]) == 0
    assert 'note: A ran on NVIDIA Test GPU, B on Other GPU: the time ratio compares devices' in capsys.readouterr().out


@pytest.mark.parametrize('argv, message', [
    (['bogus'], "invalid choice: 'bogus'"),
    (['table', '--bogus'], 'unrecognized arguments: --bogus'),
    (['summary', 'no/such.jsonl'], 'no/such.jsonl does not exist'),
    (['merge', 'results/x/full__h100.jsonl'], 'is not a shard log'),
])
def test_bad_command_lines_are_one_line_errors(argv, message, capsys):
    assert reports_main(argv) != 0
    err = capsys.readouterr().err
    assert err.startswith('error: ') and err.count('\n') == 1 and message in err


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
