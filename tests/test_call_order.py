"""Every rung is safe under CUDA graphs (torch.compile's max-autotune and reduce-overhead modes): a graph's
replay overwrites the outputs of its previous replay, so no model output may be read after the model's next
call. On the CPU this is checked by doing what a replay does: when a forward starts, every output of the
earlier forwards that is still alive is filled with NaN. A run must give exactly the same row with and without
that poison.

No float is pinned here: oneDNN and MKL choose kernels per CPU, so a loss pinned on one CPU drifts on another.
What a pin was for (a refactor that should change nothing is shown to change nothing) is checked inside one
process instead: rung k+1 with its feature switched off, and rung k's values for the hyp leaves both have, gives
rung k's table line for line. A refactor of one rung that the next one does not copy breaks that equality."""
import importlib
import weakref

import pytest
import torch

from common.flags import parse_flags
from reports.ladder import SCRIPTS

RUNGS = [script.removesuffix('.py') for script in SCRIPTS]
# 2,100 test images: more than one eval batch (2,000), so outputs kept across batches are caught too
TINY = ['--device', 'cpu', '--subset', '2100', '--epochs', '1.4', '--batch-size', '700', '--no-warmup']
TINY_NET = {'train_resnet18': ['--width', '8']}


# (rung k+1, the flags that switch off its feature where no hyp leaf of rung k does, rung k). A hyp leaf both rungs
# have takes rung k's value (tta_level 1 undoes main6's TTA, flip 'random' main7's mirror, the lr schedule and
# BN momentum main5's retune). main8's compiler is off in every tiny run, and ternary94's ternary toggle and
# widths are the tiny run's own flags; --dirac gives it main8's init back. main0 -> main1 -> main2 change the net
# itself: no flag undoes them.
FEATURE_OFF = [
    ('main3_scalebias', ['--bias-scaler', '1'], 'main2_dirac'),
    ('main4_freeze', ['--whiten-bias-epochs', '99'], 'main3_scalebias'),
    ('main5_lookahead', ['--ema-every', '1000'], 'main4_freeze'),  # never updates: no lookahead step in the run
    ('main6_tta', [], 'main5_lookahead'),
    ('main7_mirror', [], 'main6_tta'),
    ('main8_compile', [], 'main7_mirror'),
    ('ternary94', ['--no-ternary', '--dirac'], 'main8_compile'),
]


class OutputPoisoner:
    """Forward hooks on the model: each call first poisons the outputs of the calls before it that are alive."""

    def __init__(self, model):
        self.alive, self.poisoned = [], 0
        model.register_forward_pre_hook(self.before_call)
        model.register_forward_hook(self.after_call)

    def before_call(self, module, args):
        for ref in self.alive:
            output = ref()
            if output is not None:
                output.data.fill_(float('nan'))
                self.poisoned += 1
        self.alive = []

    def after_call(self, module, args, output):
        self.alive.append(weakref.ref(output))


def leaves(hyp):
    return {key: value for group in hyp.values() for key, value in group.items()}


def flags_for_values_of(lower, upper):
    """Flags that give rung `upper` the values of rung `lower` for the hyp leaves both have."""
    ours, theirs = leaves(importlib.import_module(upper).hyp), leaves(importlib.import_module(lower).hyp)
    flags = []
    for key in sorted(ours.keys() & theirs.keys()):
        if ours[key] != theirs[key]:
            flags += [f"--{key.replace('_', '-')}", str(theirs[key])]
    return flags


def tiny_run(name, data_dir, monkeypatch, poison, extra=(), off=()):
    rung = importlib.import_module(name)
    net = TINY_NET.get(name, ['--block1', '8', '--block2', '16', '--block3', '16'])
    if 'whiten_bias_epochs' in rung.hyp['opt']:
        net += ['--whiten-bias-epochs', '1']  # the freeze happens inside the run
    defaults = getattr(rung, 'RUN_DEFAULTS', None)  # ternary94: ternary on
    argv = [*extra, *TINY, *net, *off, '--data-dir', str(data_dir)]  # later flags win: TINY over extra, off last
    hyp, args = parse_flags(rung.hyp, rung.FLAGS, argv, defaults=defaults)
    monkeypatch.setattr(torch.nn.Module, 'compile', lambda self, *a, **k: None)  # the order matters, not the compiler
    model, loss_fn, train_loader, test_loader, _ = rung.prepare(hyp, args)
    poisoner = OutputPoisoner(model) if poison else None
    row = rung.main(hyp, 0, 0, model, loss_fn, train_loader, test_loader)
    return row, poisoner


def table_without_times(text):
    return [line.rsplit('|', 2)[0] for line in text.splitlines() if line.startswith('|')]


CLEAN_TABLES = {}  # rung -> the table of its tiny clean run with no extra flags, kept for the comparisons below


def clean_table(name, data_dir, monkeypatch, capsys):
    if name not in CLEAN_TABLES:
        capsys.readouterr()
        tiny_run(name, data_dir, monkeypatch, poison=False)
        CLEAN_TABLES[name] = table_without_times(capsys.readouterr().out)
    return CLEAN_TABLES[name]


@pytest.mark.parametrize('name', RUNGS)
def test_a_tiny_run_reads_no_output_after_the_next_call(name, synthetic_cache, monkeypatch, capsys):
    clean, _ = tiny_run(name, synthetic_cache, monkeypatch, poison=False)
    clean_table = CLEAN_TABLES[name] = table_without_times(capsys.readouterr().out)
    assert len(clean_table) == 3 and clean_table[-1].split('|')[2].strip() == 'eval'
    poisoned, poisoner = tiny_run(name, synthetic_cache, monkeypatch, poison=True)
    assert poisoner.poisoned > 0  # the check bites: outputs were alive at later calls
    assert (poisoned['val_acc'], poisoned['tta_val_acc']) == (clean['val_acc'], clean['tta_val_acc'])
    assert table_without_times(capsys.readouterr().out) == clean_table  # train loss and accuracy too


def test_the_poison_catches_an_output_read_after_the_next_call():
    model = torch.nn.Linear(2, 2)
    poisoner = OutputPoisoner(model)
    x = torch.ones(1, 2)
    kept = model(x)
    model(x)
    assert poisoner.poisoned == 1 and torch.isnan(kept).all()


@pytest.mark.parametrize('upper, off, lower', FEATURE_OFF, ids=[upper for upper, _, _ in FEATURE_OFF])
def test_a_rung_with_its_feature_off_is_the_rung_before(upper, off, lower, synthetic_cache, monkeypatch, capsys):
    expected = clean_table(lower, synthetic_cache, monkeypatch, capsys)
    tiny_run(upper, synthetic_cache, monkeypatch, poison=False, extra=flags_for_values_of(lower, upper), off=off)
    assert table_without_times(capsys.readouterr().out) == expected


def test_the_equality_bites(synthetic_cache, monkeypatch, capsys):
    """main7 with its mirror flip on is not main6: the comparison above can fail."""
    random_flip = clean_table('main6_tta', synthetic_cache, monkeypatch, capsys)
    assert clean_table('main7_mirror', synthetic_cache, monkeypatch, capsys) != random_flip
