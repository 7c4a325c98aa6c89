"""The side-by-side harness (reports/sidebyside.py) on the CPU, against a stand-in for the reference script with
the same interface (main, make_net, print_training_details; data read from cifar10/*.pt in its folder)."""
import json
import subprocess
import sys
import textwrap

import pytest
import torch

from common.errors import UserError
from conftest import ROOT
from reports.sidebyside import run_pairs, summarize_pairs, write_reference_data
from reports.table import make_block
from stats.log import read_rows

TINY = ['--subset', '256', '--epochs', '1', '--batch-size', '64', '--block1', '8', '--block2', '16', '--block3', '16']

# Its "accuracy" is the share of label-0 test images in the file it finds, its "time" 2.0 s, so the test can
# tell that it ran in its folder on the data we wrote, and that its own timing is what gets logged.
STAND_IN = '''
import torch
calls = []

def make_net():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 2))

def print_training_details(variables, is_final_entry):
    print(variables.get('run'), variables.get('tta_val_acc'), variables.get('total_time_seconds'))

def main(run{extra}):
    calls.append(run)
    data = torch.load('cifar10/test.pt', map_location='cpu')
    assert data['images'].dtype == torch.uint8 and data['images'].shape[1:] == (32, 32, 3)
    tta_val_acc = (data['labels'] == 0).float().mean().item()
    total_time_seconds = {time}
    print_training_details(locals(), is_final_entry=True)
    return tta_val_acc
'''


def write_stand_in(path, time=2.0, extra=''):
    path.write_text(textwrap.dedent(STAND_IN.format(time=time, extra=extra)))
    return path


def ours_argv(data_dir, *more):
    return ['--device', 'cpu', '--data-dir', str(data_dir), *TINY, *more]


def test_reference_data_files_hold_what_its_loader_expects(tmp_path):
    images = torch.randint(0, 256, (5, 32, 32, 3), dtype=torch.uint8)
    data = {'train': (images, torch.arange(5)), 'test': (images[:2], torch.tensor([3, 4]))}
    folder = write_reference_data(data, tmp_path)
    train = torch.load(folder / 'train.pt', weights_only=True)
    assert torch.equal(train['images'], images) and torch.equal(train['labels'], torch.arange(5))
    assert len(train['classes']) == 10 and train['classes'][0] == 'airplane'
    assert torch.equal(torch.load(folder / 'test.pt')['labels'], torch.tensor([3, 4]))
    big = torch.zeros(4000, 32, 32, 3, dtype=torch.uint8)  # 12 MB, of which --subset keeps 10 images
    folder = write_reference_data({'train': (big[:10], torch.zeros(4000, dtype=torch.long)[:10])}, tmp_path / 's')
    assert (folder / 'train.pt').stat().st_size < 100_000  # the slice, not the storage it views


def test_pairs_alternate_and_log_both_sides(synthetic_cache, tmp_path):
    reference = write_stand_in(tmp_path / 'airbench94.py')
    path = run_pairs(ROOT / 'main7_mirror.py', reference, 2, tmp_path / 'results', tmp_path / 'ref',
                     ours_argv(synthetic_cache))
    assert path == tmp_path / 'results' / 'sidebyside' / 'main7_mirror-vs-airbench94__cpu.jsonl'
    assert sys.modules['sidebyside_reference'].calls == ['warmup', 0, 1]
    rows = read_rows(path)
    test_labels = torch.load(tmp_path / 'ref' / 'cifar10' / 'test.pt')['labels']
    assert len(test_labels) == 256  # --subset reaches the reference's data too
    assert [row['seed'] for row in rows] == [0, 1]
    for row in rows:
        assert row['reference']['tta_val_acc'] == pytest.approx((test_labels == 0).float().mean().item())
        assert row['reference']['time_seconds'] == 2.0 and row['time_ratio'] == row['time_seconds'] / 2.0
        assert row['hyp']['opt']['batch_size'] == 64 and row['script'] == 'main7_mirror.py'
    # the flags reach the rung through its hyp argument; the module's own dict stays as written
    assert sys.modules['sidebyside_ours'].hyp['opt']['batch_size'] == 1024


def test_only_the_references_time_outlives_its_run(tmp_path):
    # all its locals (loaders, model, optimizer) would stay on the GPU through our next run and our peak memory
    from reports.sidebyside import ReferenceScript
    split = (torch.zeros(4, 32, 32, 3, dtype=torch.uint8), torch.zeros(4, dtype=torch.long))
    write_reference_data({'train': split, 'test': split}, tmp_path)
    reference = ReferenceScript(write_stand_in(tmp_path / 'airbench94.py'), tmp_path)
    assert reference.run(0, 0) == {'tta_val_acc': 1.0, 'time_seconds': 2.0}
    assert reference.total_time_seconds == 2.0


def test_more_pairs_continue_the_log_and_a_new_config_is_refused(synthetic_cache, tmp_path):
    reference = write_stand_in(tmp_path / 'airbench94.py')
    args = (ROOT / 'main7_mirror.py', reference, 1, tmp_path / 'results', tmp_path / 'ref')
    run_pairs(*args, ours_argv(synthetic_cache))
    path = run_pairs(*args, ours_argv(synthetic_cache))
    assert [row['seed'] for row in read_rows(path)] == [0, 1]
    with pytest.raises(UserError, match='lr'):
        run_pairs(*args, ours_argv(synthetic_cache, '--lr', '5'))
    write_stand_in(reference, time=3.0)  # another version of the reference script
    with pytest.raises(UserError, match='another version of airbench94.py'):
        run_pairs(*args, ours_argv(synthetic_cache))


def test_compiled_reference_gets_two_models_with_the_second_bias_frozen(synthetic_cache, tmp_path, monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, 'compile', lambda model, mode: compiled.append((model, mode)) or model)
    reference = write_stand_in(tmp_path / 'airbench94_compiled.py', extra=', model_a, model_b')
    run_pairs(ROOT / 'main7_mirror.py', reference, 1, tmp_path / 'results', tmp_path / 'ref',
              ours_argv(synthetic_cache, '--no-warmup'))
    assert [mode for _, mode in compiled] == ['max-autotune'] * 2
    assert compiled[0][0][0].bias.requires_grad and not compiled[1][0][0].bias.requires_grad


def test_a_script_that_is_not_the_reference_is_refused(synthetic_cache, tmp_path):
    other = tmp_path / 'other.py'
    other.write_text('def main(run):\n    return 0.5\n')
    with pytest.raises(UserError, match='is not the reference'):
        run_pairs(ROOT / 'main7_mirror.py', other, 1, tmp_path / 'results', tmp_path / 'ref',
                  ours_argv(synthetic_cache, '--no-warmup'))


def pair(ours_time, reference_time, ours_acc, reference_acc):
    return {'time_seconds': ours_time, 'tta_val_acc': ours_acc, 'time_ratio': ours_time / reference_time,
            'reference': {'time_seconds': reference_time, 'tta_val_acc': reference_acc}}


def test_summary_of_pairs():
    s = summarize_pairs([pair(1.0, 2.0, 0.94, 0.93), pair(3.0, 2.0, 0.95, 0.93), pair(2.0, 2.0, 0.93, 0.94)])
    assert (s['pairs'], s['ratio_median'], s['ratio_min'], s['ratio_max']) == (3, 1.0, 0.5, 1.5)
    assert s['ours_mean'] == pytest.approx(0.94) and s['reference_mean'] == pytest.approx(2.8 / 3)
    assert s['accuracy_diff'] == pytest.approx(0.94 - 2.8 / 3) and 0 < s['accuracy_p'] < 1


def test_a_pair_whose_reference_result_was_edited_is_refused(synthetic_cache, tmp_path):
    path = run_pairs(ROOT / 'main7_mirror.py', write_stand_in(tmp_path / 'airbench94.py'), 1, tmp_path / 'results',
                     tmp_path / 'ref', ours_argv(synthetic_cache, '--no-warmup'))
    row = json.loads(path.read_text())
    for reference, message in [
            ({'tta_val_acc': 93.9, 'time_seconds': 3.0}, r'reference.tta_val_acc is 93.9, not a fraction in \[0, 1\] '
                                                         r'\(in percent'),
            ({'time_seconds': 3.0}, r'reference.tta_val_acc is missing, not a fraction in \[0, 1\]'),
            ('airbench94.py', 'reference is "airbench94.py", not an object')]:
        path.write_text(json.dumps({**row, 'reference': reference}) + '\n')
        with pytest.raises(UserError, match=message):
            read_rows(path)


def test_readme_block_shows_the_pairs(synthetic_cache, tmp_path):
    reference = write_stand_in(tmp_path / 'airbench94.py', time=4.0)
    run_pairs(ROOT / 'main7_mirror.py', reference, 1, tmp_path / 'results', tmp_path / 'ref',
              ours_argv(synthetic_cache, '--no-warmup'))
    assert 'Side by side' not in make_block(tmp_path / 'results')  # CPU pairs are no evidence
    block = make_block(tmp_path / 'results', include_cpu=True)
    [line] = [line for line in block.splitlines() if line.startswith('| `main7_mirror.py`')]
    assert '`airbench94.py`' in line and '| 1 |' in line


@pytest.mark.parametrize('argv, message', [
    (['sidebyside', 'main7_mirror.py', 'ref.py', '--pairs', '0'], '--pairs must be >= 1'),
    (['summary', 'x.jsonl', '--', '--lr', '3'], 'only sidebyside takes flags after --'),
])
def test_cli_bad_input_is_one_line(argv, message):
    proc = subprocess.run([sys.executable, '-m', 'reports', *argv], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode != 0 and proc.stderr.startswith('error: ') and proc.stderr.count('\n') == 1
    assert message in proc.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason='checks the refusal on a machine without CUDA')
def test_cli_without_cuda_says_so():
    proc = subprocess.run([sys.executable, '-m', 'reports', 'sidebyside', 'main7_mirror.py', 'ref.py'], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr == 'error: the side-by-side needs a CUDA GPU (the reference ' \
                                                   'loads its data onto cuda:0)\n'


MUON_STAND_IN = """
import torch
calls = []

class CifarNet(torch.nn.Sequential):
    def __init__(self):
        super().__init__(torch.nn.Conv2d(3, 4, 2))

def print_training_details(variables, is_final_entry):
    print(variables.get('run'), variables.get('tta_val_acc'), variables.get('time_seconds'))

def main(run, model):
    calls.append((run, type(model).__name__))
    data = torch.load('cifar10/test.pt', map_location='cpu')
    tta_val_acc = (data['labels'] == 0).float().mean().item()
    time_seconds = 3.0
    print_training_details(locals(), is_final_entry=True)
    return tta_val_acc
"""


def test_airbench94_muon_gets_its_one_model_and_its_time_is_read(synthetic_cache, tmp_path):
    reference = tmp_path / 'airbench94_muon.py'
    reference.write_text(MUON_STAND_IN)
    path = run_pairs(ROOT / 'main7_mirror.py', reference, 1, tmp_path / 'results', tmp_path / 'ref',
                     ours_argv(synthetic_cache))
    assert sys.modules['sidebyside_reference'].calls == [('warmup', 'CifarNet'), (0, 'CifarNet')]
    [row] = read_rows(path)
    assert row['reference']['time_seconds'] == 3.0 and row['reference']['script'] == 'airbench94_muon.py'
