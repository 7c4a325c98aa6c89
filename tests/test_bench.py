"""Benchmarks append their numbers to results/bench/ with provenance; the README table leaves those rows out."""
import json
import subprocess
import sys

import pytest

from conftest import ROOT
from stats.bench import record_bench
from stats.table import make_block


def test_loader_benchmark_appends_its_result(synthetic_cache, tmp_path):
    argv = [sys.executable, '-m', 'airbench.bench_loader', '--data-dir', str(synthetic_cache), '--epochs', '1',
            '--batch-size', '500', '--out', str(tmp_path)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    [row] = [json.loads(line) for line in (tmp_path / 'bench' / 'loader__cpu.jsonl').read_text().splitlines()]
    assert row['benchmark'] == 'loader' and row['device'] == 'cpu' and row['settings']['batch_size'] == 500
    # one epoch of the 50,000 training images in batches of 500: 100 batches, every image seen once
    measured = row['measurements']
    assert measured['images_per_second'] * measured['seconds'] == pytest.approx(50_000)
    assert f"{row['measurements']['images_per_second']:,.0f} images/s" in proc.stdout


def test_bench_rows_append_and_stay_out_of_the_results_table(tmp_path):
    for value in (1.0, 2.0):
        path = record_bench('loader', 'cpu', {'images_per_second': value}, {}, out=tmp_path)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert [row['measurements']['images_per_second'] for row in rows] == [1.0, 2.0]
    assert make_block(tmp_path, include_cpu=True).startswith('Nothing measured yet')


def test_bench_flag_errors_are_one_line():
    for module in ('airbench.bench_loader', 'ternary.bench'):
        proc = subprocess.run([sys.executable, '-m', module, '--bogus'], cwd=ROOT, capture_output=True, text=True)
        assert proc.returncode != 0 and proc.stderr.startswith('error: unrecognized arguments: --bogus')
        assert proc.stderr.count('\n') == 1


@pytest.mark.parametrize('flags, message', [
    (['--translate', '40'], '--translate must be in 0..31'), (['--epochs', '0'], '--epochs must be > 0'),
    (['--batch-size', '60000'], 'the training set (50,000 images) must hold at least one batch of 60,000'),
])
def test_loader_benchmark_range_errors_are_one_line_and_log_nothing(flags, message, tmp_path):
    argv = [sys.executable, '-m', 'airbench.bench_loader', *flags, '--out', str(tmp_path)]
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode != 0 and proc.stderr.startswith(f'error: {message}') and proc.stderr.count('\n') == 1
    assert not (tmp_path / 'bench').exists()
