"""Command-line flags: every leaf of a script's `hyp` dict, plus the run flags of the packages it passes (FLAGS).

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
from typing import Callable, NamedTuple

from common.errors import UsageError, UserError, install_excepthook
from common.precision import DTYPES, resolve_dtype, separate_inductor_cache


class Flag(NamedTuple):
    """A run-control flag: `--runs 5`. check(value) raises a one-line UserError for a value no run can use;
    `needs` names the flag that turns this one on (--kd-alpha means nothing without --teacher)."""
    default: object
    help: str
    check: Callable | None = None
    needs: str | None = None


class Range(NamedTuple):
    """What a hyp leaf may hold: test(value) is true for a usable value; `expected` says which ones do."""
    test: Callable
    expected: str
    choices: tuple | None = None  # a short list, shown in --help and checked by argparse


class Flags(NamedTuple):
    """What one package declares in its flags.py (or a script for itself): its run flags, the ranges of the hyp
    leaves its code reads, and check(hyp, args) for a limit that involves two values. A script passes the Flags
    of the packages it uses to parse_flags, so the flag and its check sit beside the code that reads them."""
    title: str
    run: dict = {}
    ranges: dict = {}
    check: Callable | None = None


def at_least(low):
    return Range(lambda v: v >= low, f'>= {low}')


def positive():
    return Range(lambda v: v > 0, '> 0')


def channels(most):
    # An upper bound so that a typo (--block1 1000000000) is a line here, not an allocation failure inside torch.
    return Range(lambda v: 1 <= v <= most, f'in 1..{most}')


def fraction(closed=True):
    if closed:
        return Range(lambda v: 0 <= v <= 1, 'in [0, 1]')
    return Range(lambda v: 0 <= v < 1, 'in [0, 1)')


# torch.compile's modes. The CUDA-graph ones (max-autotune, reduce-overhead) overwrite a graph's outputs at its
# next replay; the rungs read every output before the next call (tests/test_call_order.py), so all are safe.
COMPILE_MODES = ('max-autotune', 'default', 'max-autotune-no-cudagraphs', 'reduce-overhead')


def check_device(name):
    if name not in ('cuda', 'cpu', 'auto'):
        raise UserError(f"--device must be 'cuda', 'cpu' or 'auto', got '{name}'")


def one_of(*values):
    return Range(lambda v: v in values, 'one of ' + ', '.join(map(str, values)), values)


# What every script takes, and the ranges of the training recipe's leaves, which the rungs' own code reads.
COMMON = Flags('run', run={
    'device': Flag('auto', "'cuda', 'cpu' or 'auto' (cuda when available)", check_device),
    'warmup': Flag(True, 'do the untimed warm-up run (compilation, cudnn autotuning) first'),
}, ranges={
    'epochs': positive(), 'batch_size': positive(), 'lr': positive(),
    'momentum': fraction(closed=False), 'weight_decay': at_least(0), 'label_smoothing': fraction(closed=False),
    'warmup_frac': fraction(), 'lr_start': at_least(0), 'lr_end': at_least(0), 'bias_scaler': positive(),
    'whiten_bias_epochs': at_least(0), 'ema_every': at_least(1), 'ema_decay': fraction(),
    'block1': channels(4096), 'block2': channels(4096), 'block3': channels(4096),
    'width': channels(512),  # ResNet-18's last stage has 8x
    'bn_momentum': fraction(), 'logit_scale': positive(), 'tta_level': one_of(0, 1, 2),
    'compile_mode': one_of(*COMPILE_MODES), 'dtype': one_of(*DTYPES),
})


def merge(flags):
    """(run flags, ranges, checks) of COMMON and `flags` together. A later Flags may narrow a range an earlier one
    declared (a rung that has fewer TTA levels); a run flag declared twice is a programming error."""
    run, ranges, checks = {}, {}, []
    for part in (COMMON, *flags):
        twice = set(run) & set(part.run)
        if twice:
            raise ValueError(f'run flags declared twice: {sorted(twice)}')
        run |= part.run
        ranges |= part.ranges
        checks += [part.check] if part.check else []
    return run, ranges, checks


def check_dependent_flags(args, run_flags, defaults):
    for name, flag in run_flags.items():
        if flag.needs and getattr(args, flag.needs) in (None, False) and getattr(args, name) != defaults[name]:
            option, other = '--' + name.replace('_', '-'), '--' + flag.needs.replace('_', '-')
            raise UserError(f'{option} only applies with {other}, which is not set: add {other} or drop {option}')


def check_ranges(hyp, args, flags=()):
    """One-line UserErrors for values no run can use: zero epochs, an empty batch, a momentum of 1, a subset too
    small to hold one training batch, --runs 0, ..."""
    run_flags, ranges, checks = merge(flags)
    for path, value in flag_leaves(hyp):
        check_number('--' + path[-1].replace('_', '-'), value)
        allowed = ranges.get(path[-1])
        if allowed and not allowed.test(value):
            raise UserError(f'--{path[-1].replace("_", "-")} must be {allowed.expected}, got {value}')
    for name, flag in run_flags.items():
        value = getattr(args, name, None)
        check_number('--' + name.replace('_', '-'), value)
        if flag.check and hasattr(args, name):
            flag.check(value)
        if value == '':  # `--data-dir "$UNSET"`: the default would be used without a word
            raise UserError(f"--{name.replace('_', '-')} is empty (an unset shell variable?): pass a value or "
                            'leave the flag out for its default')
    for check in checks:
        check(hyp, args)


FP32_MAX = 3.4028234663852886e38


def check_number(option, value):
    """A float flag must be finite, and within fp32's range: torch holds lrs and the like in fp32 tensors."""
    if isinstance(value, float) and not math.isfinite(value):
        raise UserError(f'{option} must be a finite number, got {value}')
    if isinstance(value, float) and abs(value) > FP32_MAX:
        raise UserError(f'{option} {value:g} is beyond the range of fp32 (about 3.4e38), which torch holds it in: '
                        'pass a smaller value')


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


def add_flag(parser, name, default, help_text, choices=None):
    flag = '--' + name.replace('_', '-')
    if isinstance(default, bool):
        parser.add_argument(flag, dest=name, nargs='?', const=True, default=default, type=parse_bool, metavar='BOOL',
                            help=f'{help_text} (default {default}; --no-{flag[2:]} is --{flag[2:]}=false)')
        parser.add_argument('--no-' + name.replace('_', '-'), dest=name, action='store_false', help=argparse.SUPPRESS)
    else:
        kind = str if default is None else float if isinstance(default, float) else type(default)
        shown = f"; one of {', '.join(map(str, choices))}" if choices else ''
        parser.add_argument(flag, dest=name, default=default, type=kind, choices=choices,
                            metavar=name.upper() if choices else None, help=f'{help_text} (default {default}{shown})')


def build_parser(hyp, flags=(), description=None, defaults=None):
    """flags: the Flags of the packages the script uses. defaults: a script's own defaults for run flags, e.g.
    {'ternary': True} in ternary94.py."""
    run_flags, ranges, _ = merge(flags)
    parser = Parser(description=description, allow_abbrev=False)
    defaults = defaults or {}
    unknown = set(defaults) - set(run_flags)
    if unknown:
        raise ValueError(f'defaults for unknown run flags: {sorted(unknown)}')
    names, group = set(run_flags), parser.add_argument_group('hyp (the leaves of the hyp dict)')
    for path, value in flag_leaves(hyp):
        if path[-1] in names:
            raise ValueError(f'hyp leaf name {path[-1]!r} is not unique: every leaf must be its own flag')
        if path[-1] not in ranges:
            raise ValueError(f'hyp leaf {path[-1]!r} has no range: declare one where the code that reads it lives')
        names.add(path[-1])
        add_flag(group, path[-1], value, 'hyp: ' + '.'.join(path), ranges[path[-1]].choices)
    for part in (COMMON, *flags):
        group = parser.add_argument_group(part.title) if part.run else None
        for name, flag in part.run.items():
            add_flag(group, name, defaults.get(name, flag.default), flag.help)
    return parser


def cuda_available():
    """torch.cuda.is_available(), with the warnings a machine without CUDA gives printed now, each as one note:
    later they would land inside the epoch table (a CUDA query from a run; torch.compile's import of
    cpp_extension, which logs "No CUDA runtime is found" when CUDA_HOME is set)."""
    import torch  # here: `python -m reports` parses its flags without loading torch
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


def resolve_dtype_leaf(hyp, device, allowed):
    """A `dtype` leaf of 'auto' becomes the device's choice among the script's allowed formats
    (common/precision.py), so the resolved hyp that every row stores, and the log's name, say which format the
    run trained in; fp16 is refused on the CPU."""
    for path, value in flag_leaves(hyp):
        if path[-1] == 'dtype':
            node = hyp
            for key in path[:-1]:
                node = node[key]
            node['dtype'] = resolve_dtype(value, device, allowed=allowed.choices if allowed else DTYPES)
            if node['dtype'] == 'fp16' and device == 'cpu':
                raise UserError('--dtype fp16 needs a CUDA GPU (the CPU has no fast fp16 convs): use --dtype bf16 '
                                'or fp32 on the CPU, or leave --dtype auto')


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
    return name


def parse_flags(hyp, flags=(), argv=None, description=None, defaults=None):
    """Returns (resolved copy of hyp, args) and prints both, so every log starts with its configuration.
    flags: the Flags of the packages the script uses (a rung's FLAGS); COMMON's come with every script.
    Also makes UserErrors print as one line from here on, and, for a script's own command line (argv None),
    SIGTERM and Ctrl-C stop it with one line (common/errors.py); a caller passing argv keeps its signals."""
    install_excepthook(stop_handlers=argv is None)
    separate_inductor_cache()  # before anything compiles
    args = build_parser(hyp, flags, description, defaults).parse_args(argv)
    resolved = copy.deepcopy(hyp)
    for path, _ in flag_leaves(hyp):
        node = resolved
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = getattr(args, path[-1])
        delattr(args, path[-1])
    check_ranges(resolved, args, flags)
    run_flags = merge(flags)[0]
    check_dependent_flags(args, run_flags, {name: flag.default for name, flag in run_flags.items()} | (defaults or {}))
    args.device = resolve_device(args.device)
    resolve_dtype_leaf(resolved, args.device, merge(flags)[1].get('dtype'))
    # --data-dir stays None when only $CIFAR10_DIR is set: the loader reads the variable and names it in errors.
    print('hyp: ' + json.dumps(resolved))
    print('run: ' + json.dumps(vars(args)))
    return resolved, args
