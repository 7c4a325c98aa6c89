"""--gpus: one process per GPU, each running its share of a trial's seeds (stats/trial.py `delegate_to_gpus`).

The parent plans the seeds, then starts one copy of the script per GPU with CUDA_VISIBLE_DEVICES set and its
seeds in $STATS_GPU_SEEDS; each child runs exactly those, appending to the one log.
"""
import os
import re

from common import provenance
from common.errors import UserError
from stats.flags import check_gpus_format

GPU_SEEDS_ENV = 'STATS_GPU_SEEDS'  # set by the --gpus parent for its children; not a user setting
GPU_SEEDS_LIMIT = 10_000  # seeds one --gpus command may plan: Linux caps one environment string at 128 KiB


def parse_gpus(text, count):
    """'all' or '0,2' -> list of CUDA device indices, checked against the `count` visible GPUs."""
    if count == 0:
        raise UserError(f"--gpus {text} needs CUDA GPUs, but none is visible here (or --device cpu was given): "
                        'drop --gpus')
    check_gpus_format(text)
    if text.strip() == 'all':
        return list(range(count))
    ids = [int(part) for part in text.split(',')]
    if len(set(ids)) != len(ids) or max(ids) >= count:
        raise UserError(f'--gpus {text}: each index must appear once and be below {count}, the number of '
                        'visible GPUs')
    return ids


def gpu_child_seeds():
    """The seeds a --gpus parent gave this process, or None when it was not started that way."""
    text = os.environ.get(GPU_SEEDS_ENV)
    if text is None:
        return None
    if not re.fullmatch(r'-?\d+(,-?\d+)*', text):
        raise UserError(f"${GPU_SEEDS_ENV} is set internally by --gpus; unset it (got '{text}')")
    return [int(seed) for seed in text.split(',')]


def strip_gpus_flag(argv):
    """The command line minus `--gpus X` / `--gpus=X`: what each GPU's child process runs."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == '--gpus':
            skip = True
        elif not arg.startswith('--gpus='):
            kept.append(arg)
    return kept


def visible_device(index):
    """CUDA_VISIBLE_DEVICES for a child that should use GPU `index` of this process's numbering (which is
    itself a selection when a scheduler set CUDA_VISIBLE_DEVICES)."""
    visible = os.environ.get('CUDA_VISIBLE_DEVICES')
    return visible.split(',')[index].strip() if visible else str(index)


def cuda_gpu_names(device):
    """Names of the visible CUDA GPUs; [] on the CPU."""
    if not provenance.is_cuda(device):
        return []
    import torch  # here: the reports CLI imports this module and starts without torch
    return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
