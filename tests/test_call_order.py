"""Every rung is safe under CUDA graphs (torch.compile's max-autotune and reduce-overhead modes): a graph's
replay overwrites the outputs of its previous replay, so no model output may be read after the model's next
call. On the CPU this is checked by doing what a replay does: when a forward starts, every output of the
earlier forwards that is still alive is filled with NaN. A run must give exactly the same row with and without
that poison.

The same tiny clean runs are pinned: their per-epoch tables (losses, accuracies) must stay what they were when
PINNED was recorded (at 3748a8d, torch 2.14.1, on the 2-core CPU machines of this project), so a refactor that should change nothing,
such as the rung redesign, is shown to change nothing. Change a pin only with a reason in the commit message.
A pin can also move with another torch version or CPU kind (other float kernels)."""
import importlib
import weakref

import pytest
import torch

from common.flags import parse_flags
from reports.ladder import SCRIPTS

RUNGS = [script.removesuffix('.py') for script in SCRIPTS]
# 2,100 test images: more than one eval batch (2,000), so outputs kept across batches are caught too
TINY = ['--device', 'cpu', '--subset', '2100', '--epochs', '1.4', '--batch-size', '700', '--no-warmup']
TINY_NET = {'train_resnet18': ['--width', '4']}


PINNED = {  # the table of each tiny clean run (no times)
    'main0_network': ['| 0 | 0 | 2.3042 | 0.0971 | 0.1138 |', '| 0 | 1 | 2.3043 | 0.1071 | 0.1138 |', '| 0 | eval | | | 0.1138 | 0.1138'],
    'main1_whiten': ['| 0 | 0 | 2.3031 | 0.0943 | 0.1010 |', '| 0 | 1 | 2.3033 | 0.0971 | 0.1010 |', '| 0 | eval | | | 0.1010 | 0.1010'],
    'main2_dirac': ['| 0 | 0 | 2.3027 | 0.1143 | 0.1038 |', '| 0 | 1 | 2.3000 | 0.1171 | 0.1048 |', '| 0 | eval | | | 0.1048 | 0.0933'],
    'main3_scalebias': ['| 0 | 0 | 2.3028 | 0.1157 | 0.1029 |', '| 0 | 1 | 2.3000 | 0.0986 | 0.1005 |', '| 0 | eval | | | 0.1005 | 0.0971'],
    'main4_freeze': ['| 0 | 0 | 2.3028 | 0.1157 | 0.1029 |', '| 0 | 1 | 2.3000 | 0.0986 | 0.1005 |', '| 0 | eval | | | 0.1005 | 0.0971'],
    'main5_lookahead': ['| 0 | 0 | 2.3028 | 0.1100 | 0.1052 |', '| 0 | 1 | 2.2991 | 0.1114 | 0.1033 |', '| 0 | eval | | | 0.1033 | 0.0976'],
    'main6_tta': ['| 0 | 0 | 2.3028 | 0.1100 | 0.1052 |', '| 0 | 1 | 2.2991 | 0.1114 | 0.1033 |', '| 0 | eval | | | 0.1033 | 0.0976'],
    'main7_mirror': ['| 0 | 0 | 2.3043 | 0.0943 | 0.1052 |', '| 0 | 1 | 2.3034 | 0.1043 | 0.1038 |', '| 0 | eval | | | 0.1038 | 0.0971'],
    'main8_compile': ['| 0 | 0 | 2.3043 | 0.0943 | 0.1052 |', '| 0 | 1 | 2.3034 | 0.1043 | 0.1038 |', '| 0 | eval | | | 0.1038 | 0.0971'],
    'ternary94': ['| 0 | 0 | 2.3038 | 0.1057 | 0.1005 |', '| 0 | 1 | 2.3040 | 0.0800 | 0.0948 |', '| 0 | eval | | | 0.0948 | 0.0948'],
    'train_resnet18': ['| 0 | 0 | 2.3325 | 0.1029 | 0.1010 |', '| 0 | 1 | 2.3597 | 0.1000 | 0.1010 |', '| 0 | eval | | | 0.1010 | 0.1010'],
}


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


def tiny_run(name, data_dir, monkeypatch, poison):
    rung = importlib.import_module(name)
    net = TINY_NET.get(name, ['--block1', '8', '--block2', '16', '--block3', '16'])
    if 'whiten_bias_epochs' in rung.hyp['opt']:
        net += ['--whiten-bias-epochs', '1']  # the freeze happens inside the run
    defaults = getattr(rung, 'RUN_DEFAULTS', None)  # ternary94: ternary on
    hyp, args = parse_flags(rung.hyp, rung.FLAGS, [*TINY, *net, '--data-dir', str(data_dir)], defaults=defaults)
    monkeypatch.setattr(torch.nn.Module, 'compile', lambda self, *a, **k: None)  # the order matters, not the compiler
    model, loss_fn, train_loader, test_loader, _ = rung.prepare(hyp, args)
    poisoner = OutputPoisoner(model) if poison else None
    row = rung.main(hyp, 0, 0, model, loss_fn, train_loader, test_loader)
    return row, poisoner


def table_without_times(text):
    return [line.rsplit('|', 2)[0] for line in text.splitlines() if line.startswith('|')]


@pytest.mark.parametrize('name', RUNGS)
def test_a_tiny_run_is_as_pinned_and_reads_no_output_after_the_next_call(name, synthetic_cache, monkeypatch,
                                                                          capsys):
    clean, _ = tiny_run(name, synthetic_cache, monkeypatch, poison=False)
    clean_table = table_without_times(capsys.readouterr().out)
    assert [' '.join(line.split()) for line in clean_table] == PINNED[name], 'the run changed (see the top)'
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
