"""Benchmarks append their numbers to results/bench/ with provenance; the README's run tables leave those rows out
(the step benchmark's have a table of their own). The loader benchmark's byte counter counts what it says it
counts. A benchmark checks its --out before it measures."""
import json
import re
import subprocess
import sys

import pytest
import torch

from airbench.bench import ByteCounter, ReferenceLoader, count_bytes
from airbench.loader import CifarLoader
from conftest import ROOT
from reports.table import make_block
from stats.bench import record_bench


def test_loader_benchmark_appends_its_result(synthetic_cache, tmp_path):
    argv = [sys.executable, '-m', 'airbench.bench', '--data-dir', str(synthetic_cache), '--epochs', '1',
            '--batch-size', '500', '--subset', '5000', '--out', str(tmp_path)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [row] = [json.loads(line) for line in (tmp_path / 'bench' / 'loader__cpu.jsonl').read_text().splitlines()]
    assert row['benchmark'] == 'loader' and row['device'] == 'cpu' and row['settings']['batch_size'] == 500
    # one epoch of the first 5,000 training images in batches of 500: 10 batches, every image seen once
    measured, reference = row['measurements'], row['measurements']['reference']
    for side in (measured, reference):
        assert side['images_per_second'] * side['seconds'] == pytest.approx(5_000)
        assert f"{side['images_per_second']:,.0f}" in proc.stdout
        assert f"{side['epoch_bytes'] / 1e6:,.0f}" in proc.stdout
    assert measured['epoch_bytes'] < reference['epoch_bytes'] and measured['setup_bytes'] < reference['setup_bytes']
    assert 'reference (old)' in proc.stdout and 'loader (new)' in proc.stdout


def test_byte_counter_counts_each_ops_reads_and_writes():
    x, index = torch.zeros(1000), torch.arange(10)  # 4,000 and 80 bytes
    with ByteCounter() as views:
        x.view(10, 100).t().expand(3, 100, 10)
    with ByteCounter() as add:
        x.expand(50, 1000) + x  # a broadcast operand is read once: 4,000 + 4,000 in, 200,000 out
    with ByteCounter() as gather:
        x[index]  # a gather reads what it fetches, not its whole source: 40 + 80 in, 40 out
    assert (views.bytes, add.bytes, gather.bytes) == (0, 208_000, 160)


def test_an_epoch_reads_and_writes_each_image_once_where_the_old_one_made_many_passes():
    images = torch.randint(0, 256, (2000, 32, 32, 3), dtype=torch.uint8)
    loader = CifarLoader(images, torch.zeros(2000, dtype=torch.long), 200, 'cpu', train=True, flip='alternating',
                         translate=2)
    first, later = count_bytes(loader)
    image_bytes = 2000 * 3 * 32 * 32 * 4  # fp32 on the CPU
    assert 2 * image_bytes <= later < 1.02 * 2 * image_bytes  # the batch gathers, plus index tensors and labels
    assert first > later + image_bytes  # the run's normalize and pad happen in its first epoch
    assert count_bytes(ReferenceLoader(loader))[1] > 10 * later


def test_bench_rows_append_and_stay_out_of_the_results_table(tmp_path):
    for value in (1.0, 2.0):
        path = record_bench('loader', 'cpu', {'images_per_second': value}, {}, out=tmp_path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [row['measurements']['images_per_second'] for row in rows] == [1.0, 2.0]
    # provenance.provenance() without a script: no script_sha256, the commit names the benchmark's code
    assert list(rows[0]) == ['benchmark', 'settings', 'measurements', 'date', 'device', 'git_commit', 'versions',
                             'gpu_info', 'cpu_info']
    assert set(rows[0]['cpu_info']) == {'model', 'torch_isa', 'native_bf16', 'amx_bf16', 'avx512_bf16', 'cores',
                                        'torch_threads'}
    assert make_block(tmp_path, include_cpu=True).startswith('Nothing measured yet')


def test_bench_flag_errors_are_one_line():
    for module in ('airbench.bench', 'ternary.bench'):
        proc = subprocess.run([sys.executable, '-m', module, '--bogus'], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode != 0 and proc.stderr.startswith('error: unrecognized arguments: --bogus')
        assert proc.stderr.count('\n') == 1


@pytest.mark.parametrize('flags, message', [
    (['--translate', '40'], '--translate must be in 0..31'), (['--epochs', '0'], '--epochs must be > 0'),
    (['--batch-size', '60000'], 'the training set (50,000 images) must hold at least one batch of 60,000'),
])
def test_loader_benchmark_range_errors_are_one_line_and_log_nothing(flags, message, tmp_path):
    argv = [sys.executable, '-m', 'airbench.bench', *flags, '--out', str(tmp_path)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and proc.stderr.startswith(f'error: {message}') and proc.stderr.count('\n') == 1
    assert not (tmp_path / 'bench').exists()


def test_the_step_benchmark_times_both_formats_and_appends_a_row(tmp_path):
    proc = subprocess.run([sys.executable, 'tools/bench_step.py', '--batch-size', '4', '--steps', '1',
                           '--out', str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    [row] = [json.loads(line) for line in (tmp_path / 'bench' / 'step__cpu.jsonl').read_text().splitlines()]
    measured = row['measurements']
    assert measured['fp32_over_bf16'] == measured['fp32_seconds_per_step'] / measured['bf16_seconds_per_step']
    assert row['settings']['batch_size'] == 4 and row['cpu_info']['model']
    for script in ('nope.py', 'reports/table.py'):
        proc = subprocess.run([sys.executable, 'tools/bench_step.py', '--script', script], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 1 and proc.stderr.startswith(f'error: --script {script} is not a rung')


def test_every_benchmark_refuses_an_unwritable_out_before_it_measures(tmp_path):
    (tmp_path / 'a_file').write_text('not a folder')
    out = str(tmp_path / 'a_file')
    for argv in (['tools/bench_step.py'], ['-m', 'airbench.bench', '--data-dir', str(tmp_path / 'no_data')],
                 ['-m', 'ternary.bench']):
        proc = subprocess.run([sys.executable, *argv, '--out', out], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
        # the data folder does not exist either: the --out error comes first, before any data or measurement
        assert proc.returncode == 1 and proc.stderr == f'error: --out {out}/bench: cannot write there (Not a ' \
                                                       'directory): pass a writable folder\n', (argv, proc.stderr)
    proc = subprocess.run([sys.executable, 'tools/bench_step.py', '--steps', 'two'], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1 and proc.stderr == ("error: argument --steps: invalid int value: 'two' (see python "
                                                    'tools/bench_step.py --help)\n')


def test_every_benchmark_flag_shows_its_default_in_help():
    for argv in (['tools/bench_step.py'], ['-m', 'airbench.bench'], ['-m', 'ternary.bench']):
        proc = subprocess.run([sys.executable, *argv, '--help'], cwd=ROOT, capture_output=True, text=True,
                              timeout=300)
        options = re.split(r'\n(?=  -)', proc.stdout.split('options:\n', 1)[1])[1:]  # one entry per flag, -h left out
        assert proc.returncode == 0 and options, (argv, proc.stdout)
        for option in options:
            assert '(default:' in option, (argv, option)


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the refusal where there is no GPU')
def test_the_kernel_benchmark_fails_without_a_gpu(tmp_path):
    proc = subprocess.run([sys.executable, '-m', 'ternary.bench', '--out', str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1 and proc.stderr.startswith('error: ternary.bench needs a CUDA GPU')
    assert not (tmp_path / 'bench').exists()


@pytest.mark.parametrize('script', ['main7_mirror.py', 'main9_muon.py', 'ternary94.py'])
def test_the_step_benchmark_steps_every_optimizer_of_a_rung(script):
    # one shape of make_optimizer each: (optimizer, scheduler), (lists) with epoch_steps, (lists) without
    sys.path.insert(0, str(ROOT / 'tools'))
    try:
        import bench_step
    finally:
        sys.path.remove(str(ROOT / 'tools'))
    rung = bench_step.load_rung(script)
    flags = ['--block1', '8', '--block2', '16', '--block3', '16'] + ['--filter-lr', '0.07'] * (script == 'ternary94.py')
    hyp, _ = bench_step.parse_flags(rung.hyp, rung.FLAGS, ['--device', 'cpu', '--dtype', 'fp32', *flags])
    model = rung.make_net(hyp['net'], 'cpu')
    optimizers = bench_step.make_optimizers(rung, model, hyp['opt'])
    assert len(optimizers) == (1 if script == 'main7_mirror.py' else 2)
    stepped = {id(p) for optimizer in optimizers for group in optimizer.param_groups for p in group['params']}
    assert stepped >= {id(p) for p in model.parameters() if p.requires_grad}  # frozen ones may sit in a group
