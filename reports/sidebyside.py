"""Side by side: one of our rungs against the published reference script, in one process, run A B A B.

    python -m reports sidebyside main7_mirror.py path/to/cifar10-airbench/legacy/airbench94.py --pairs 10
    python -m reports sidebyside main8_compile.py path/to/.../airbench94_compiled.py --pairs 10 -- --tta-level 2
    python -m reports sidebyside main9_muon.py path/to/cifar10-airbench/airbench94_muon.py --pairs 10

The reference is the public KellerJordan/cifar10-airbench repository (kept outside git, never committed). Its
loader reads `cifar10/{train,test}.pt` from the working directory; we write those files from the CIFAR-10
copy our loader finds (`--data-dir`), so both sides train on the same bytes, and call its `main` from its
working folder. Flags after `--` go to our rung (its hyp flags).

Fairness. Both scripts are imported into this process, so they share the GPU, the driver, torch and the
cudnn autotuning cache; each gets one untimed warm-up run first (the compiled reference builds its two
compiled models exactly as its own __main__ does). Then pair i is our run with seed S+i followed by the
reference's run with torch's global seed set to S+i. Each side's time is what that side itself measures
with CUDA events (ours: whitening init + training + TTA; the reference: the same three phases), so the
ratio ours/reference compares like with like: both normalize, pad and mirror the training set inside their
timed first epoch, and normalize the test set inside their timed TTA (airbench/loader.py). The reference's
time is read from the variables it hands to its own `print_training_details`, not parsed from its printout.

Each pair is one row of results/sidebyside/<ours>-vs-<reference>__<hardware>.jsonl, written as it finishes.
"""
import contextlib
import importlib.util
import inspect
import json
import os
import sys
from pathlib import Path

import numpy as np

from common.errors import UserError
from common.files import atomic_write
from common import provenance
from stats.log import append_row, check_rows, read_rows
from stats.summary import compare, format_p, mean_std, values
from stats.seeds import next_seeds
from stats.trial import config_args

CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']
REFERENCE_HINT = ('expected legacy/airbench94.py, legacy/airbench94_compiled.py or airbench94_muon.py of a clone '
                  'of github.com/KellerJordan/cifar10-airbench')


def sidebyside_log_path(out, ours, reference, hardware):
    return Path(out) / 'sidebyside' / f'{Path(ours).stem}-vs-{Path(reference).stem}__{hardware}.jsonl'


def write_reference_data(data, folder):
    """The reference's expected files, cifar10/{train,test}.pt: dicts of uint8 NHWC images, int64 labels
    and the class names, as its own loader saves them after a torchvision download."""
    import torch
    folder = Path(folder) / 'cifar10'
    for split, (images, labels) in data.items():
        with atomic_write(folder / f'{split}.pt') as tmp:
            # clone: a --subset slice would otherwise save the whole split's storage
            torch.save({'images': images.contiguous().clone(), 'labels': labels.clone(), 'classes': CLASSES}, tmp)
    return folder


def import_script(path, name):
    """A script imported as a module: its definitions run, its __main__ block does not."""
    path = Path(path)
    if not path.is_file() or path.suffix != '.py':
        raise UserError(f'{path} is not a Python script: pass a .py file, e.g. main7_mirror.py')
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # so that torch.compile and pickling can find the module by name
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def working_directory(folder):
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


class OurRung:
    """One of our rungs, set up as its own __main__ block does (prepare), with `argv` as its flags. The resolved
    hyp is passed to prepare and main, as the rung's __main__ does; the module's own `hyp` is left as written."""

    def __init__(self, script, argv):
        from common.flags import parse_flags
        self.script = Path(script)
        self.module = import_script(script, 'sidebyside_ours')
        if not all(hasattr(self.module, name) for name in ('hyp', 'FLAGS', 'prepare', 'main')):
            raise UserError(f'{script} is not one of our rungs (hyp, FLAGS, prepare, main): expected e.g. '
                            'main7_mirror.py')
        defaults = getattr(self.module, 'RUN_DEFAULTS', None)  # ternary94.py's ternary=True
        self.hyp, self.args = parse_flags(self.module.hyp, self.module.FLAGS, argv, defaults=defaults)
        self.model, self.loss_fn, self.train_loader, self.test_loader, self.warmup_loader = \
            self.module.prepare(self.hyp, self.args)

    def warm_up(self):
        self.module.main(self.hyp, 'warmup', self.args.seed, self.model, self.loss_fn, self.warmup_loader,
                         self.test_loader)

    def run(self, run, seed):
        return self.module.main(self.hyp, run, seed, self.model, self.loss_fn, self.train_loader, self.test_loader)


class ReferenceScript:
    """The published script, driven through its own `main`, in a folder holding its data files."""

    def __init__(self, script, folder):
        self.script, self.folder = Path(script), Path(folder)
        self.module = import_script(script, 'sidebyside_reference')
        has = lambda *names: all(hasattr(self.module, name) for name in names)
        if not (has('main', 'print_training_details') and (has('make_net') or has('CifarNet'))):
            raise UserError(f'{script} is not the reference: {REFERENCE_HINT}')
        self.total_time_seconds = None
        report = self.module.print_training_details

        def capture(variables, is_final_entry):  # the last row of a run holds its timed total
            if is_final_entry:  # only the number: all its locals (loaders, model) would stay on the GPU
                # the legacy scripts' total; airbench94_muon keeps its running total in time_seconds
                self.total_time_seconds = variables.get('total_time_seconds', variables.get('time_seconds'))
            report(variables, is_final_entry)
        self.module.print_training_details = capture
        parameters = len(inspect.signature(self.module.main).parameters)
        self.models = self.compiled_models() if parameters == 3 else self.muon_model() if parameters == 2 else ()

    def compiled_models(self):
        """What airbench94_compiled.py's __main__ builds: two compiled nets, the second with the whitening bias
        frozen; main() reinitializes them every run."""
        import torch
        train_bias, freeze_bias = self.module.make_net(), self.module.make_net()
        freeze_bias[0].bias.requires_grad = False
        return tuple(torch.compile(model, mode='max-autotune') for model in (train_bias, freeze_bias))

    def muon_model(self):
        """What airbench94_muon.py's __main__ builds: one CifarNet in channels_last, compiled in max-autotune (on
        CUDA); main(run, model) resets it every run."""
        import torch
        device = 'cuda' if torch.cuda.is_available() else 'cpu'
        model = self.module.CifarNet().to(device).to(memory_format=torch.channels_last)
        if device == 'cuda':
            model.compile(mode='max-autotune')
        return (model,)

    def run(self, run, seed):
        import torch
        torch.manual_seed(seed)
        self.total_time_seconds = None
        with working_directory(self.folder):
            tta_val_acc = self.module.main(run, *self.models)
        if self.total_time_seconds is None:
            raise UserError(f'{self.script} printed no final row with total_time_seconds: {REFERENCE_HINT}')
        return {'tta_val_acc': float(tta_val_acc), 'time_seconds': float(self.total_time_seconds)}


def pair_row(ours, reference, pair, seed, our_result, reference_result, session):
    """session: provenance.provenance() of our rung, taken when the pairs start; the date and the GPU's clocks
    are read again for each pair."""
    return {'script': ours.script.name, 'variant': 'sidebyside', 'pair': pair, 'seed': seed,
            'tta_val_acc': our_result['tta_val_acc'], 'time_seconds': our_result['time_seconds'],
            'val_acc': our_result['val_acc'], 'peak_memory_bytes': our_result['peak_memory_bytes'],
            'reference': {'script': reference.script.name, 'sha256': provenance.file_sha256(reference.script),
                          **reference_result},
            'time_ratio': our_result['time_seconds'] / reference_result['time_seconds'],
            **session, 'date': provenance.utc_now(), 'gpu_info': provenance.gpu_info(ours.args.device),
            'hyp': ours.hyp, 'args': config_args(ours.args)}


def check_reference_rows(path, rows, reference):
    sha = provenance.file_sha256(reference)
    for row in rows:
        if row['reference']['sha256'] != sha:
            raise UserError(f'{path} holds pairs with another version of {Path(reference).name}: pass another --out')


def run_pairs(ours_script, reference_script, pairs, out='results', folder='.reference', ours_argv=()):
    """Warm-up of each side, then `pairs` more pairs (ours, then the reference), each appended to the log as
    it finishes. Seeds: from --seed upward, skipping those the log already holds. Returns the log's path."""
    ours = OurRung(ours_script, list(ours_argv))
    # Hashed now, as a trial does: the code this process loaded.
    session = provenance.provenance(ours.script, ours.args.device, out)
    path = sidebyside_log_path(out, ours_script, reference_script, provenance.slugify(session['device']))
    rows = read_rows(path)
    config = json.loads(json.dumps({'hyp': ours.hyp, 'args': config_args(ours.args)}))
    check_rows(path, rows, ours.script.name, config)
    check_reference_rows(path, rows, reference_script)
    seeds = next_seeds(ours.args.seed, pairs, {row['seed'] for row in rows})
    from airbench.loader import load_data  # here: torch is loaded only by commands that train
    write_reference_data(load_data(ours.args), folder)
    reference = ReferenceScript(reference_script, folder)
    print(f'log: {path} ({len(rows)} pairs already logged); warm-up of both sides first')
    ours.warm_up()
    reference.run('warmup', ours.args.seed)
    for seed in seeds:
        pair = seed - ours.args.seed
        row = pair_row(ours, reference, pair, seed, ours.run(pair, seed), reference.run(pair, seed), session)
        append_row(path, row)
        print(f'pair {pair}: ours {row["time_seconds"]:.3f} s, reference {row["reference"]["time_seconds"]:.3f} s, '
              f'ratio {row["time_ratio"]:.3f}')
    return path


def summarize_pairs(rows):
    """Per-pair time ratio ours/reference (median, range) and both sides' mean accuracy."""
    reference_rows = [row['reference'] for row in rows]
    ratios = values(rows, 'time_ratio')
    ours_mean, ours_std = mean_std(values(rows, 'tta_val_acc'))
    reference_mean, reference_std = mean_std(values(reference_rows, 'tta_val_acc'))
    accuracy = compare(reference_rows, rows)  # ours minus the reference
    return {'pairs': len(rows), 'ratio_median': float(np.median(ratios)), 'ratio_min': float(ratios.min()),
            'ratio_max': float(ratios.max()), 'ours_mean': ours_mean, 'ours_std': ours_std,
            'reference_mean': reference_mean, 'reference_std': reference_std,
            'ours_time_median': float(np.median(values(rows, 'time_seconds'))),
            'reference_time_median': float(np.median(values(reference_rows, 'time_seconds'))),
            'accuracy_diff': accuracy['diff'], 'accuracy_p': accuracy['p']}


def format_pairs(s):
    return (f"{s['pairs']} pairs: time ratio ours/reference median {s['ratio_median']:.3f} "
            f"(range {s['ratio_min']:.3f} to {s['ratio_max']:.3f}; median times {s['ours_time_median']:.3f} s vs "
            f"{s['reference_time_median']:.3f} s); TTA accuracy ours {100 * s['ours_mean']:.2f}% vs reference "
            f"{100 * s['reference_mean']:.2f}% (difference {100 * s['accuracy_diff']:+.2f} points, Welch "
            f"{format_p(s['accuracy_p'])})")
