"""Command-line flags: every leaf of a script's `hyp` dict, plus the run-control flags every script shares.

`--lr 11.5` overrides hyp['opt']['lr']; booleans take `--name`, `--no-name` or `--name=false`. An unknown
flag or a value of the wrong type is an error (as in nanoGPT's configurator), never silently ignored.
No config files: the hyp dict plus flags is the only configuration.
"""
import argparse
import copy
import importlib
import json
import logging
import math
import re
import sys
import warnings

import torch

from airbench.augment import FLIPS
from airbench.errors import UsageError, UserError, install_excepthook

# Run control: name -> (default, help). Types come from the defaults; None defaults are strings.
RUN_FLAGS = {
    'runs': (1, 'number of timed runs (seeds) to do after the warm-up run'),
    'resume': (False, 'do only those of seeds seed .. seed+runs-1 the log lacks: finish a job that was cut off'),
    'seed': (0, 'seed of the first run; run r of a trial uses seed + r'),
    'data_dir': (None, 'folder with CIFAR-10 (binary or python layout, or a cache); default $CIFAR10_DIR, else the '
                       'cache, else a torchvision download: offline, this flag (or $CIFAR10_DIR) is needed'),
    'device': ('auto', "'cuda', 'cpu' or 'auto' (cuda when available)"),
    'out': ('results', 'folder of the JSONL results logs'),
    'variant': (None, "name of this configuration's log (default: full, ternary or ternary-kd)"),
    'force': (False, 'append to a log that holds a different configuration'),
    'shard': (None, "K/N: do the K-th of N slices of the seeds (cluster job arrays)"),
    'gpus': (None, "'all' or a list like 0,1: one process per GPU, all writing to one log"),
    'subset': (0, 'use only the first N training and test images (0: all); for quick CPU checks'),
    'warmup': (True, 'do the untimed warm-up run (compilation, cudnn autotuning) first'),
    'ternary': (False, 'BitNet b1.58 ternary weights for convs and linears (see ternary/)'),
    'ternary_acts': (0, 'with --ternary: 8 also quantizes activations to 8-bit absmax; 0: off'),
    'ternary_per_channel': (False, 'with --ternary: one weight scale per output channel instead of per tensor'),
    'ternary_keep_first': (True, 'with --ternary: keep the first conv in full precision'),
    'ternary_keep_last': (False, 'with --ternary: keep the classifier in full precision'),
    'teacher': (None, 'distil from this saved full-precision model of the same script'),
    'kd_alpha': (0.5, 'with --teacher: weight of the distillation term'),
    'kd_temperature': (4.0, 'with --teacher: softmax temperature of the distillation term'),
    'save_model': (None, 'write the last trained model to this path'),
}


# Ranges of the hyp leaves the scripts share, checked after parsing so a bad value is one line here rather than
# a crash (or silent nonsense) deep inside a run: name -> (test, what is expected).
TRAIN_IMAGES = 50_000
# torch.compile's modes. The CUDA-graph ones (max-autotune, reduce-overhead) overwrite a graph's outputs at its
# next replay; the rungs read every output before the next call (tests/test_call_order.py), so all are safe.
COMPILE_MODES = ('max-autotune', 'default', 'max-autotune-no-cudagraphs', 'reduce-overhead')
HYP_RANGES = {
    'epochs': (lambda v: v > 0, '> 0'),
    'batch_size': (lambda v: v > 0, '> 0'),
    'lr': (lambda v: v > 0, '> 0'),
    'momentum': (lambda v: 0 <= v < 1, 'in [0, 1)'),
    'weight_decay': (lambda v: v >= 0, '>= 0'),
    'label_smoothing': (lambda v: 0 <= v < 1, 'in [0, 1)'),
    'warmup_frac': (lambda v: 0 <= v <= 1, 'in [0, 1]'),
    'lr_start': (lambda v: v >= 0, '>= 0'),
    'lr_end': (lambda v: v >= 0, '>= 0'),
    'bias_scaler': (lambda v: v > 0, '> 0'),
    'whiten_bias_epochs': (lambda v: v >= 0, '>= 0'),
    'ema_every': (lambda v: v >= 1, '>= 1'),
    'ema_decay': (lambda v: 0 <= v <= 1, 'in [0, 1]'),
    'flip': (lambda v: v in FLIPS, ', '.join(FLIPS)),
    'translate': (lambda v: 0 <= v < 32, 'in 0..31 (reflect padding needs it below the image size)'),
    'cutout': (lambda v: 0 <= v <= 32, 'in 0..32'),
    'block1': (lambda v: v >= 1, '>= 1'),
    'block2': (lambda v: v >= 1, '>= 1'),
    'block3': (lambda v: v >= 1, '>= 1'),
    'width': (lambda v: v >= 1, '>= 1'),
    'bn_momentum': (lambda v: 0 <= v <= 1, 'in [0, 1]'),
    'logit_scale': (lambda v: v > 0, '> 0'),
    'tta_level': (lambda v: v in (0, 1, 2), '0, 1 or 2'),
    'compile_mode': (lambda v: v in COMPILE_MODES, ', '.join(COMPILE_MODES)),
}


# Run flags that only mean something beside another one: name -> the flag that turns them on. Set without it,
# they would change nothing but the logged config (so the next plain run would be refused as "a different config").
DEPENDENT_FLAGS = {'ternary_acts': 'ternary', 'ternary_per_channel': 'ternary', 'ternary_keep_first': 'ternary',
                   'ternary_keep_last': 'ternary', 'kd_alpha': 'teacher', 'kd_temperature': 'teacher'}


def check_dependent_flags(args, defaults):
    for name, needs in DEPENDENT_FLAGS.items():
        if getattr(args, needs) in (None, False) and getattr(args, name) != defaults[name]:
            flag, other = '--' + name.replace('_', '-'), '--' + needs.replace('_', '-')
            raise UserError(f'{flag} only applies with {other}, which is not set: add {other} or drop {flag}')


def check_ranges(hyp, args):
    """One-line UserErrors for values no run can use: zero epochs, an empty batch, a subset too small to
    hold one training batch (training drops the last partial batch), a momentum of 1, ..."""
    for path, value in flag_leaves(hyp):
        test, expected = HYP_RANGES.get(path[-1], (None, None))
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"--{path[-1].replace('_', '-')} must be a finite number, got {value}")
        if test and not test(value):
            raise UserError(f"--{path[-1].replace('_', '-')} must be {expected}, got {value}")
    if args.subset < 0:
        raise UserError(f'--subset must be >= 0 (0: all images), got {args.subset}')
    batch_size = next((v for path, v in flag_leaves(hyp) if path[-1] == 'batch_size'), None)
    train_images = min(args.subset or TRAIN_IMAGES, TRAIN_IMAGES)
    if batch_size and batch_size > train_images:
        raise UserError(f'the training set ({train_images:,} images) must hold at least one batch of {batch_size:,}: '
                        f'lower --batch-size' + (' or raise --subset' if args.subset else ''))


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one-line UsageErrors instead of a usage dump and exit."""

    def error(self, message):
        raise UsageError(f'{message} (see {self.prog} --help)')


def parse_bool(text):
    if text.lower() in ('1', 'true', 'yes', 'on'):
        return True
    if text.lower() in ('0', 'false', 'no', 'off'):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def flag_leaves(hyp, path=()):
    """(path, value) for every leaf of a nested dict."""
    for key, value in hyp.items():
        if isinstance(value, dict):
            yield from flag_leaves(value, path + (key,))
        else:
            yield path + (key,), value


# Leaves whose values form a short list, shown in --help and checked by argparse.
CHOICES = {'flip': FLIPS, 'tta_level': (0, 1, 2), 'compile_mode': COMPILE_MODES}


def add_flag(parser, name, default, help_text):
    flag = '--' + name.replace('_', '-')
    if isinstance(default, bool):
        parser.add_argument(flag, dest=name, nargs='?', const=True, default=default, type=parse_bool, metavar='BOOL',
                            help=f'{help_text} (default {default}; --no-{flag[2:]} is --{flag[2:]}=false)')
        parser.add_argument('--no-' + name.replace('_', '-'), dest=name, action='store_false', help=argparse.SUPPRESS)
    else:
        kind = str if default is None else float if isinstance(default, float) else type(default)
        choices = CHOICES.get(name)
        shown = f"; one of {', '.join(map(str, choices))}" if choices else ''
        parser.add_argument(flag, dest=name, default=default, type=kind, choices=choices,
                            metavar=name.upper() if choices else None, help=f'{help_text} (default {default}{shown})')


def build_parser(hyp, description=None, defaults=None):
    """defaults: a script's own defaults for run flags, e.g. {'ternary': True} in ternary94.py."""
    parser = Parser(description=description, allow_abbrev=False)
    defaults = defaults or {}
    unknown = set(defaults) - set(RUN_FLAGS)
    if unknown:
        raise ValueError(f'defaults for unknown run flags: {sorted(unknown)}')
    names = set(RUN_FLAGS)
    for path, value in flag_leaves(hyp):
        if path[-1] in names:
            raise ValueError(f'hyp leaf name {path[-1]!r} is not unique: every leaf must be its own flag')
        names.add(path[-1])
        add_flag(parser, path[-1], value, 'hyp: ' + '.'.join(path))
    for name, (default, help_text) in RUN_FLAGS.items():
        add_flag(parser, name, defaults.get(name, default), help_text)
    return parser


def cuda_available():
    """torch.cuda.is_available(), with the warnings a machine without CUDA gives printed now, each as one note:
    later they would land inside the epoch table (a CUDA query from a run; torch.compile's import of
    cpp_extension, which logs "No CUDA runtime is found" when CUDA_HOME is set)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        available = torch.cuda.is_available()
    for warning in caught:
        print(f'note: {" ".join(str(warning.message).split())}')
        warnings.filterwarnings('ignore', message=re.escape(str(warning.message)))
    if not available and 'torch.utils.cpp_extension' not in sys.modules:
        records = []
        logger = logging.getLogger('torch.utils.cpp_extension')
        logger.addFilter(records.append)  # a filter that returns None: the record is kept here, not printed
        try:
            importlib.import_module('torch.utils.cpp_extension')  # once per process: it logs on import
        finally:
            logger.removeFilter(records.append)
        for record in records:
            print(f'note: {" ".join(record.getMessage().split())}')
    return available


def resolve_device(name):
    available = cuda_available()
    if name == 'auto':
        if available:
            return 'cuda'
        print('note: no CUDA GPU found, running on the CPU: a full run takes hours there; for a quick check '
              'add --subset 2000 --epochs 1')
        return 'cpu'
    if name == 'cuda' and not available:
        raise UserError('--device cuda was asked for but no CUDA GPU is visible: use --device cpu (slow) '
                        'or run on a machine with a GPU')
    if name not in ('cuda', 'cpu'):
        raise UserError(f"--device must be 'cuda', 'cpu' or 'auto', got '{name}'")
    return name


def parse_flags(hyp, argv=None, description=None, defaults=None):
    """Returns (resolved copy of hyp, args) and prints both, so every log starts with its configuration.
    Also makes UserErrors print as one line from here on, and, for a script's own command line (argv None),
    SIGTERM and Ctrl-C stop it with one line (airbench/errors.py); a caller passing argv keeps its signals."""
    install_excepthook(stop_handlers=argv is None)
    args = build_parser(hyp, description, defaults).parse_args(argv)
    resolved = copy.deepcopy(hyp)
    for path, _ in flag_leaves(hyp):
        node = resolved
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = getattr(args, path[-1])
        delattr(args, path[-1])
    check_ranges(resolved, args)
    check_dependent_flags(args, {name: default for name, (default, _) in RUN_FLAGS.items()} | (defaults or {}))
    args.device = resolve_device(args.device)
    # --data-dir stays None when only $CIFAR10_DIR is set: the loader reads the variable and names it in errors.
    print('hyp: ' + json.dumps(resolved))
    print('run: ' + json.dumps(vars(args)))
    return resolved, args
