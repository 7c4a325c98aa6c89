"""Every rung runs end to end on the CPU (tiny subset, one epoch), logs its run, and rejects bad input
with one line; the ladder's adjacent diffs stay one feature wide."""
import contextlib
import io
import json
import subprocess
import sys

import pytest

from conftest import ROOT
from reports import ladder

TINY_TEST = 300  # --subset: test images too; not a power of 2, where float32 would be exact
TINY_NET = ['--block1', '8', '--block2', '16', '--block3', '16']
# main8 at its own compile mode (max-autotune), with the whitening bias frozen inside the run: the warm-up run
# must compile every graph the timed run meets, the frozen-bias ones included
EPOCHS = {'main8_compile.py': ['--epochs', '2', '--whiten-bias-epochs', '1']}


def tiny_flags(script, data_dir, out):
    net = ['--width', '8'] if script == 'train_resnet18.py' else TINY_NET
    return ['--device', 'cpu', '--data-dir', str(data_dir), '--out', str(out), '--subset', str(TINY_TEST),
            '--epochs', '1', '--batch-size', '64', *net]


def run_script(script, *flags):
    return subprocess.run([sys.executable, script, *flags], cwd=ROOT, capture_output=True, text=True, timeout=900)


def logged_rows(out, script):
    paths = sorted((out / script.removesuffix('.py')).glob('*.jsonl'))
    return [json.loads(line) for path in paths for line in path.read_text().splitlines()]


@pytest.mark.parametrize('script', [s for s in ladder.SCRIPTS if s != 'ternary94.py'])  # ternary94: its own test below
def test_rung_runs_on_cpu_and_logs_its_run(script, synthetic_cache, tmp_path):
    saved = tmp_path / 'model.pt'  # --save-model is ternary/'s flag: a rung that took it and wrote nothing would pass
    proc = run_script(script, *tiny_flags(script, synthetic_cache, tmp_path), *EPOCHS.get(script, []),
                      '--save-model', str(saved))
    assert proc.returncode == 0, proc.stderr[-3000:]
    epochs = 2 if script in EPOCHS else 1
    table = [line for line in proc.stdout.splitlines() if line.startswith('|')]
    assert table[0].split('|')[1].strip() == 'run' and len(table) == 2 + 2 * (epochs + 1)  # header, warm-up, run
    assert table[-1].split('|')[2].strip() == 'eval'
    assert 'compiled' not in proc.stderr  # no compilation inside a timed run
    [row] = logged_rows(tmp_path, script)
    assert row['seed'] == 0 and row['epochs'] == epochs and 0 <= row['tta_val_acc'] <= 1
    for key in ('val_acc', 'tta_val_acc'):  # hits / 300 test images exactly (a float32 mean is off by ~1e-8)
        assert row[key] == round(row[key] * TINY_TEST) / TINY_TEST
    assert row['hyp']['opt']['batch_size'] == 64
    import torch
    checkpoint = torch.load(saved, weights_only=True)
    assert checkpoint['script'] == script and checkpoint['ternary'] is False and checkpoint['state_dict']


@pytest.mark.parametrize('script', ladder.SCRIPTS)
def test_evaluate_gives_no_accuracy_for_a_model_whose_outputs_are_nan(script):
    # A run that diverges on its last step has a finite last loss (taken before that update): its evaluation is
    # what must catch it, or argmax of NaN logits (class 0) logs a 10% run. NaN is refused by stats.Trial.record
    # (tests/test_stats_trial.py). A stand-in model: the check is evaluate's.
    import math
    import torch
    from airbench.loader import CifarLoader
    from reports.sidebyside import import_script
    rung = import_script(ROOT / script, 'rung_' + script.removesuffix('.py'))
    images = torch.randint(0, 256, (40, 32, 32, 3), dtype=torch.uint8)
    loader = CifarLoader(images, torch.arange(40) % 10, 20, 'cpu')
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 10))
    assert 0 <= rung.evaluate(model, loader, 'fp32', tta_level=2) <= 1  # finite outputs: an accuracy
    for bad in (float('nan'), float('inf')):
        with torch.no_grad():
            model[1].bias[3] = bad
        assert all(math.isnan(rung.evaluate(model, loader, 'fp32', tta_level)) for tta_level in (0, 2))


def test_ternary_and_distillation_end_to_end(synthetic_cache, tmp_path):
    teacher = tmp_path / 'teacher.pt'
    flags = tiny_flags('main0_network.py', synthetic_cache, tmp_path)
    proc = run_script('main0_network.py', *flags, '--save-model', str(teacher), '--no-warmup')
    assert proc.returncode == 0 and teacher.exists(), proc.stderr[-3000:]
    packed = tmp_path / 'student.tpk'
    proc = run_script('main0_network.py', *flags, '--ternary', '--teacher', str(teacher), '--no-warmup',
                      '--export-packed', str(packed))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f'packed model: {packed}, {packed.stat().st_size:,} bytes' in proc.stdout
    variants = {row['variant'] for row in logged_rows(tmp_path, 'main0_network.py')}
    assert variants == {'full', 'ternary-kd'}


def test_ternary94_is_ternary_by_default_and_keeps_the_whitening_conv(synthetic_cache, tmp_path):
    flags = tiny_flags('ternary94.py', synthetic_cache, tmp_path)
    packed = tmp_path / 'model.tpk'  # and its packed export, of a compiled model, checked as it is written
    proc = run_script('ternary94.py', *flags, '--compile-mode', 'default', '--export-packed', str(packed))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'full precision: whiten' in proc.stdout and 'layers.0.conv1' in proc.stdout
    [row] = logged_rows(tmp_path, 'ternary94.py')
    assert row['variant'] == 'ternary' and row['args']['ternary'] is True and 'export_packed' not in row['args']
    assert f'packed model: {packed}, {packed.stat().st_size:,} bytes' in proc.stdout
    assert f"its logits on {TINY_TEST} test images equal the trained model's" in proc.stdout


@pytest.mark.parametrize('dirac', [True, False])
def test_ternary94_dirac_leaf_sets_the_init_of_its_ternary_convs(dirac):
    import torch
    import ternary
    import ternary94
    net = dict(ternary94.hyp['net'], block1=8, block2=16, block3=16, dirac=dirac, dtype='fp32')
    model = ternary.convert(ternary94.make_net(net, 'cpu'))
    ternary94.reinit_net(model)  # as each run starts: through the ternary layers' reset_parameters
    convs = [m for m in model.modules() if isinstance(m, ternary94.Conv)]
    assert len(convs) == 6 and all(isinstance(m, ternary.TernaryConv2d) for m in convs)
    for conv in convs:
        head = conv.weight.detach()[:conv.in_channels]
        identity = torch.nn.init.dirac_(torch.empty_like(head))
        assert torch.equal(head, identity) is dirac


def test_filter_norm_sgd_renormalizes_each_filter_then_moves_it_lr_along_its_nesterov_update():
    import torch
    from ternary94 import FilterNormSGD
    torch.manual_seed(0)
    scales = torch.tensor([0.1, 1, 5, 20]).view(4, 1, 1, 1)  # filters of very different norms
    weight = torch.nn.Parameter(torch.randn(4, 3, 3, 3) * scales)
    optimizer = FilterNormSGD([weight], lr=0.07, momentum=0.85)
    buffer = torch.zeros_like(weight)
    for _ in range(3):  # the momentum builds up; each filter's step stays 0.07 long
        weight.grad = torch.randn_like(weight) * scales.flip(0)
        buffer = 0.85 * buffer + weight.grad
        update = weight.grad + 0.85 * buffer  # Nesterov
        unit = weight.detach() / weight.detach().flatten(1).norm(dim=1).view(4, 1, 1, 1)
        expected = unit - 0.07 * update / update.flatten(1).norm(dim=1).view(4, 1, 1, 1)
        optimizer.step()
        torch.testing.assert_close(weight.detach(), expected)
    weight.grad = torch.zeros_like(weight)  # a filter with no gradient: renormalized, not moved, never NaN
    optimizer.step()
    assert torch.isfinite(weight).all()


@pytest.mark.parametrize('filter_lr', [0.0, 0.07])
def test_ternary94_filter_lr_moves_the_3x3_convs_to_their_own_optimizer(filter_lr):
    import torch
    import ternary94
    net = dict(ternary94.hyp['net'], block1=8, block2=16, block3=16, dtype='fp32')
    model = ternary94.make_net(net, 'cpu')
    optimizers, schedulers = ternary94.make_optimizer(model, 10, dict(ternary94.hyp['opt'], filter_lr=filter_lr))
    convs = {id(m.weight) for m in model.modules() if isinstance(m, ternary94.Conv)}
    groups = [{id(p) for group in optimizer.param_groups for p in group['params']} for optimizer in optimizers]
    assert len(convs) == 6 and len(schedulers) == len(optimizers)
    assert set.union(*groups) == {id(p) for p in model.parameters()}  # each parameter in one optimizer
    assert sum(map(len, groups)) == len(list(model.parameters()))
    if filter_lr:
        assert [type(o) for o in optimizers] == [torch.optim.SGD, ternary94.FilterNormSGD] and groups[1] == convs
    else:
        assert [type(o) for o in optimizers] == [torch.optim.SGD] and convs <= groups[0]


def test_ternary94_steps_filter_norm_sgd_and_sgd_every_step(synthetic_cache, monkeypatch):
    import torch
    import ternary94
    from common.flags import parse_flags
    argv = ['--device', 'cpu', '--data-dir', str(synthetic_cache), '--subset', str(TINY_TEST), '--epochs', '1',
            '--batch-size', '64', *TINY_NET, '--filter-lr', '0.07', '--no-warmup']
    hyp, args = parse_flags(ternary94.hyp, ternary94.FLAGS, argv, defaults=ternary94.RUN_DEFAULTS)
    monkeypatch.setattr(torch.nn.Module, 'compile', lambda self, *a, **k: None)  # the wiring matters here
    steps = {}
    for optimizer in (torch.optim.SGD, ternary94.FilterNormSGD):
        def counted(self, *a, _step=optimizer.step, _name=optimizer.__name__, **k):
            steps[_name] = steps.get(_name, 0) + 1
            return _step(self, *a, **k)
        monkeypatch.setattr(optimizer, 'step', counted)
    model, loss_fn, train_loader, test_loader, _ = ternary94.prepare(hyp, args)
    row = ternary94.main(hyp, 0, 0, model, loss_fn, train_loader, test_loader)
    assert len(train_loader) == 4  # 300 images in full batches of 64: one epoch is 4 steps
    assert steps == {'SGD': 4, 'FilterNormSGD': 4}
    assert 0 <= row['tta_val_acc'] <= 1


@pytest.mark.parametrize('script', ladder.SCRIPTS)
def test_every_rung_calls_the_packed_export(script):
    # --export-packed is ternary/'s flag, so every rung takes it: one that did not call the writer would take the
    # flag and silently write nothing. Run end to end only where a test trains ternary (ternary94, main0); here the
    # call is checked in the source, as the smoke runs above train in full precision (--save-model: checked there)
    source = (ROOT / script).read_text()
    assert 'ternary.export_from_flags(model, args, test_loader)' in source


def test_ternary_under_torch_compile(synthetic_cache, tmp_path):
    proc = run_script('main8_compile.py', *tiny_flags('main8_compile.py', synthetic_cache, tmp_path),
                      '--ternary', '--no-ternary-keep-first', '--no-warmup', '--compile-mode', 'default')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert len(logged_rows(tmp_path, 'main8_compile.py')) == 1
    # without the warm-up run the timed run compiles, and says so
    assert 'warning: run 0 compiled' in proc.stderr and 'its time includes compilation' in proc.stderr


@pytest.mark.parametrize('flags, message', [
    (['--runs', '0'], '--runs'),
    (['--learning-rate', '3'], 'unrecognized arguments: --learning-rate'),
    (['--data-dir', '/nonexistent/cifar'], 'does not exist'),
    (['--epochs', 'ten'], "invalid float value: 'ten'"),
])
def test_bad_input_is_one_line(flags, message, synthetic_cache, tmp_path):
    base = tiny_flags('main0_network.py', synthetic_cache, tmp_path)
    proc = run_script('main0_network.py', *base, *flags)
    assert proc.returncode != 0
    assert proc.stderr.strip().count('\n') == 0 and proc.stderr.startswith('error: ') and message in proc.stderr
    assert not any((tmp_path / 'main0_network').glob('*.jsonl')) or logged_rows(tmp_path, 'main0_network.py') == []


def test_ladder_diffs_are_one_feature_each():
    from reports.ladder import ladder_problems
    assert ladder_problems(ROOT) == []


def test_readme_table_matches_the_results_log():
    from reports.table import update_readme
    assert update_readme(ROOT / 'results', ROOT / 'README.md', check=True) is False


def test_every_hyp_leaf_a_committed_row_lacks_says_what_that_row_did():
    """stats.log.LEAVES_BEFORE: a leaf added after rows were logged has no value in them, and today's default
    may not be what they did (ternary94's dirac changed its default), so each such leaf declares theirs."""
    from common.flags import flag_leaves
    from reports.sidebyside import import_script
    from stats.log import LEAVES_BEFORE, read_rows
    undeclared = set()
    for path in sorted((ROOT / 'results').glob('*/*.jsonl')):
        script = ROOT / (path.parent.name + '.py')
        if not script.is_file():
            continue  # results/bench/ and results/sidebyside/ hold no script's own runs
        rows = read_rows(path)
        with contextlib.redirect_stdout(io.StringIO()):
            today = {leaf for leaf, _ in flag_leaves(import_script(script, 'leaves_' + script.stem).hyp)}
        for row in rows:
            lacking = today - {leaf for leaf, _ in flag_leaves(row['hyp'])} - {('net', 'dtype')}
            undeclared |= {(script.name, leaf) for leaf in lacking if leaf not in LEAVES_BEFORE.get(script.name, {})}
    assert not undeclared, f'declare what these rows did in stats/log.py LEAVES_BEFORE: {sorted(undeclared)}'


def test_a_run_shorter_than_one_lookahead_period_keeps_what_it_learned(synthetic_cache, tmp_path):
    # 4 steps (300 images, batch 64, last partial batch dropped) and lookahead every 5: ending on the slow weights
    # would restore the initial weights, the same whatever the learning rate
    import torch
    states = []
    for lr in ('0.5', '2.0'):
        path = tmp_path / f'lr{lr}.pt'
        proc = run_script('main5_lookahead.py', *tiny_flags('main5_lookahead.py', synthetic_cache, tmp_path / lr),
                          '--lr', lr, '--save-model', str(path))
        assert proc.returncode == 0, proc.stderr[-3000:]
        states.append(torch.load(path, weights_only=False)['state_dict'])
    assert any(not torch.equal(a, states[1][name]) for name, a in states[0].items())
