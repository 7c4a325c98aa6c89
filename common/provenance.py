"""Where a run came from: the device, the software versions, the script's hash and the git commit.

Every row of a results log carries these (STYLE.md item 10), so a number can be traced to the code and the
machine that produced it; provenance() gathers them for a trial's runs (stats/trial.py), a side-by-side's pairs
(reports/sidebyside.py) and a benchmark's rows (stats/bench.py). torch is imported inside the functions that
need it, so importing this module does not load it.
"""
import datetime
import hashlib
import importlib.metadata
import os
import platform
import re
import subprocess
from pathlib import Path


def slugify(text):
    """'NVIDIA H100 80GB HBM3' -> 'nvidia-h100-80gb-hbm3': a device name usable in a file name."""
    return re.sub(r'[^a-z0-9]+', '-', text.lower()).strip('-') or 'unknown'


def is_cuda(device):
    return str(device).split(':')[0] == 'cuda'


def device_name(device):
    """The GPU's marketing name on CUDA, else 'cpu'."""
    if not is_cuda(device):
        return 'cpu'
    import torch
    return torch.cuda.get_device_name()


def package_version(name):
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions():
    import torch
    return {'python': platform.python_version(), 'torch': torch.__version__, 'cuda': torch.version.cuda,
            'cudnn': torch.backends.cudnn.version(), 'triton': package_version('triton')}


GPU_FIELDS = ('uuid', 'driver_version', 'clocks.sm', 'clocks.mem', 'clocks.max.sm', 'clocks.max.mem',
              'power.limit', 'pstate')


def gpu_info(device):
    """The GPU's driver, clocks and power limit as nvidia-smi reads them now (we never set them), or {} on
    the CPU or without nvidia-smi. Clocks read at an idle moment are idle clocks: compare the max ones."""
    if not is_cuda(device):
        return {}
    import torch
    try:
        proc = subprocess.run(['nvidia-smi', f'--query-gpu={",".join(GPU_FIELDS)}', '--format=csv,noheader'],
                              capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return {}
    gpus = [dict(zip(GPU_FIELDS, (cell.strip() for cell in line.split(','))))
            for line in proc.stdout.splitlines() if line.count(',') == len(GPU_FIELDS) - 1]
    # This process's GPU among all of them (CUDA_VISIBLE_DEVICES renumbers), matched by UUID.
    uuid = str(getattr(torch.cuda.get_device_properties(torch.cuda.current_device()), 'uuid', ''))
    mine = [gpu for gpu in gpus if uuid and uuid in gpu['uuid']]
    return (mine or gpus or [{}])[0]


def cpu_model_name():
    """The CPU's model name from /proc/cpuinfo (Linux), else what platform reports."""
    from common.precision import cpuinfo_field
    return cpuinfo_field('model name') or platform.processor() or platform.machine() or 'unknown'


def cpu_info():
    """The host CPU, so a CPU figure can be traced to its machine: model name, the instruction set torch's kernels
    use, whether it has native bf16 (AMX or AVX-512 BF16), its cores and torch's thread count."""
    import torch
    from common.precision import cpu_flags, native_bf16
    flags = cpu_flags()
    return {'model': cpu_model_name(), 'torch_isa': torch.backends.cpu.get_cpu_capability(),
            'native_bf16': native_bf16(flags), 'amx_bf16': 'amx_bf16' in flags, 'avx512_bf16': 'avx512_bf16' in flags,
            'cores': len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count(),
            'torch_threads': torch.get_num_threads()}


def file_sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')


def run_git(folder, *argv):
    """git's stdout, or None when git is missing, fails, or `folder` is outside a repository."""
    try:
        proc = subprocess.run(['git', '-C', str(folder), *argv], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def git_commit(folder, ignore=None):
    """Short commit of the repository holding `folder`, with '+dirty' when files differ from it, or 'unknown'.

    `ignore` (the results folder) is left out of the dirty check: the logs are tracked files that every run
    appends to, and they do not change what the code computes."""
    commit = run_git(folder, 'rev-parse', '--short', 'HEAD')
    if commit is None:
        return 'unknown'
    pathspec = []
    top = run_git(folder, 'rev-parse', '--show-toplevel')
    if ignore is not None and top is not None:
        ignored = Path(ignore).resolve()
        if ignored.is_relative_to(Path(top).resolve()):
            pathspec = ['--', f':(top,exclude){ignored.relative_to(Path(top).resolve()).as_posix()}']
    status = run_git(folder, 'status', '--porcelain', *pathspec)
    return commit + ('+dirty' if status else '')


def provenance(script, device, out, name=None):
    """The fields of a results row that say where it came from: date, device, git_commit, script_sha256,
    versions, gpu_info, cpu_info, in that order. A trial or a side-by-side takes them once at its start, so the hash is
    of the code this process loaded, and gives each row its own date.

    script: the file whose sha256 is logged and whose repository gives the commit; None for a benchmark row,
    which has no script_sha256 and takes this repository's commit. device: 'cpu' or 'cuda[:i]'. out: the
    results folder, left out of the dirty check. name: the device's name where the caller knows it better than
    device_name(device) (a --gpus parent logs the GPUs of its children)."""
    folder = Path(script).parent if script is not None else Path(__file__).parent
    fields = {'date': utc_now(), 'device': name or device_name(device), 'git_commit': git_commit(folder, out)}
    if script is not None:
        fields['script_sha256'] = file_sha256(script)
    return {**fields, 'versions': versions(), 'gpu_info': gpu_info(device), 'cpu_info': cpu_info()}
