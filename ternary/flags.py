"""The --ternary toggle and its options, distillation (--teacher), --save-model and --export-packed. A script passes
FLAGS to parse_flags."""
from pathlib import Path

import torch

from common.errors import UserError
from common.flags import Flag, Flags
from ternary.export import MAGIC
from ternary.layers import check_act_bits


def check_ternary_acts(bits):
    try:
        check_act_bits(bits)
    except UserError:
        raise UserError(f'--ternary-acts must be 0 (off) or 2..8 (bits), got {bits}') from None


def check_kd_alpha(alpha):
    if not 0 <= alpha <= 1:
        raise UserError(f'--kd-alpha must be in [0, 1], got {alpha}')


def check_kd_temperature(temperature):
    if not temperature > 0:
        raise UserError(f'--kd-temperature must be positive, got {temperature}')


def check_save_model_path(path, out=None):
    """Refuses, when the flags are parsed, a --save-model path whose file the model would replace after training:
    a results log (any .jsonl, so also the run's own log before it exists; `out`, the --out folder, is named in
    the message) or any existing file that is not a saved model. An empty file or a saved model may be replaced."""
    path = Path(path)
    if path.suffix == '.jsonl':
        logs = f' (the logs under --out {out} are .jsonl files)' if out is not None else ''
        raise UserError(f'--save-model {path} names a results log{logs}: saving the model there would replace its '
                        f'rows; pass a checkpoint path such as {path.with_suffix(".pt")}')
    if not path.is_file() or path.stat().st_size == 0 or is_saved_model(path):
        return
    what = 'a results log (JSON lines)' if first_bytes(path) == b'{' else 'not a model saved with --save-model'
    raise UserError(f'--save-model {path} exists and is {what}: saving the model would replace it after training; '
                    f'pass a new path, or move that file away first')


def is_saved_model(path):
    """Whether `path` holds a checkpoint as distill.save_model writes it: {'format', ..., 'state_dict'}. By its keys,
    not its format string, which lives in distill.py, a module this one may not import (tests/test_ternary_imports)."""
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True, mmap=True)  # mapped: nothing is read
    except Exception:  # torch.load raises many types for files it cannot read
        return False
    return isinstance(checkpoint, dict) and isinstance(checkpoint.get('state_dict'), dict) and 'format' in checkpoint


def first_bytes(path, count=1):
    try:
        with open(path, 'rb') as f:
            return f.read(count)
    except OSError:  # unreadable: still refused, only not named as a log
        return b''


def check_export_packed_path(path, save_model=None):
    """Refuses a --export-packed path whose file the export would replace and that is not a packed model (a log,
    a checkpoint, anything else), and the --save-model path: the two files would overwrite each other."""
    path = Path(path)
    if save_model is not None and path.resolve() == Path(save_model).resolve():
        raise UserError(f'--export-packed {path} is also the --save-model path: pass two paths, e.g. '
                        f'{path.with_suffix(".tpk")} for the packed file')
    if path.suffix == '.jsonl':
        raise UserError(f'--export-packed {path} names a results log: the export would replace its rows; pass a '
                        f'path such as {path.with_suffix(".tpk")}')
    if path.is_file() and path.stat().st_size and first_bytes(path, len(MAGIC)) != MAGIC:
        raise UserError(f'--export-packed {path} exists and is not a packed model: the export would replace it '
                        'after training; pass a new path, or move that file away first')


def check_save_model(hyp, args):
    """FLAGS' check: it runs in parse_flags, before any output folder is made or any data read."""
    if getattr(args, 'save_model', None) is not None:
        check_save_model_path(args.save_model, getattr(args, 'out', None))  # a script without stats/ has no --out
    if getattr(args, 'export_packed', None) is not None:
        check_export_packed_path(args.export_packed, getattr(args, 'save_model', None))


FLAGS = Flags('ternary weights and distillation (ternary/)', run={
    'ternary': Flag(False, 'BitNet b1.58 ternary weights for convs and linears (see ternary/)'),
    'ternary_acts': Flag(0, 'with --ternary: 8 also quantizes activations to 8-bit absmax; 0: off', check_ternary_acts,
                         needs='ternary'),
    'ternary_per_channel': Flag(False, 'with --ternary: one weight scale per output channel instead of per tensor',
                                needs='ternary'),
    'ternary_keep_first': Flag(True, 'with --ternary: keep the first conv in full precision', needs='ternary'),
    'ternary_keep_last': Flag(False, 'with --ternary: keep the classifier in full precision', needs='ternary'),
    'teacher': Flag(None, 'distil from this saved full-precision model of the same script'),
    'kd_alpha': Flag(0.5, 'with --teacher: weight of the distillation term', check_kd_alpha, needs='teacher'),
    'kd_temperature': Flag(4.0, 'with --teacher: softmax temperature of the distillation term', check_kd_temperature,
                           needs='teacher'),
    'save_model': Flag(None, 'write the last trained model to this path (with --gpus: the last any GPU trained)'),
    'export_packed': Flag(None, 'with --ternary: also write the last trained model to this path as a packed file '
                                '(2-bit codes, ternary.export_packed), checked to reload to the same logits',
                          needs='ternary'),
}, check=check_save_model)
