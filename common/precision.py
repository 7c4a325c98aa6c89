"""The float format a run trains in: the `dtype` hyp leaf of every script (`--dtype auto|fp32|bf16|fp16`).

- fp16: the weights are fp16, the BatchNorms kept in fp32, and batches arrive in fp16 (airbench's CUDA choice).
- bf16: fp32 master weights; the forward and the loss run under bf16 autocast, so the convs and the classifier
  multiply in bf16 while BatchNorm statistics, the loss, the optimizer, lookahead and the TTA average stay fp32.
- fp32: everything in fp32.
- auto: fp16 on CUDA (bf16 where a script allows no fp16); bf16 on a CPU with native bf16 instructions (AMX or
  AVX-512 BF16); fp32 elsewhere.

Autocast keeps its bf16 copies of the weights until the outermost autocast region exits, so a region must be
entered per step, around the forward and the loss only: a run wrapped in one region would train on the initial
weights' copies for ever (its loss stays flat). The whitening init is computed outside any region, in fp32: in
bf16 the covariance is too coarse and `eigh` returns NaN filters.
"""
import contextlib
import os
import platform
from pathlib import Path

DTYPES = ('auto', 'fp32', 'bf16', 'fp16')
NATIVE_BF16_FLAGS = ('amx_bf16', 'avx512_bf16')  # /proc/cpuinfo: AMX tiles (Intel), AVX-512 BF16 (Intel, AMD)


def cpuinfo_field(name):
    """The value of the first `name` line of /proc/cpuinfo (Linux), or None where there is none."""
    try:
        text = Path('/proc/cpuinfo').read_text(errors='replace')
    except OSError:
        return None
    line = next((line for line in text.splitlines() if line.partition(':')[0].strip() == name), None)
    return None if line is None else line.partition(':')[2].strip()


def cpu_flags():
    """The CPU's feature flags; empty where /proc/cpuinfo cannot be read."""
    return set((cpuinfo_field('flags') or '').split())


# oneDNN's ISA caps (ONEDNN_MAX_CPU_ISA) below AVX512_CORE, and below AVX512_CORE_BF16 (bf16 emulated).
ISA_CAPS_BELOW_AVX512 = ('SSE41', 'AVX', 'AVX2', 'AVX2_VNNI', 'AVX2_VNNI_2')
ISA_CAPS_WITHOUT_BF16 = (*ISA_CAPS_BELOW_AVX512, 'AVX512_CORE', 'AVX512_CORE_VNNI')


def onednn_cap(environ):
    return environ.get('ONEDNN_MAX_CPU_ISA', '').upper()


def native_bf16(flags=None, environ=os.environ):
    """Whether the CPU multiplies bf16 in hardware and oneDNN may use it. Emulated bf16 is far slower than fp32:
    a step of main7's net took 68 s in bf16 against 5.5 s in fp32 on an AMD EPYC with oneDNN held to AVX2
    (`ONEDNN_MAX_CPU_ISA=AVX2 python tools/bench_step.py --steps 3`), 2.5 s against 4.5 s without the cap."""
    flags = cpu_flags() if flags is None else flags
    capped = onednn_cap(environ) in ISA_CAPS_WITHOUT_BF16
    return not capped and any(flag in flags for flag in NATIVE_BF16_FLAGS)


AVX512_CORE_FLAGS = ('avx512f', 'avx512bw', 'avx512vl', 'avx512dq')  # without them oneDNN runs AVX2 kernels


def onednn_below_avx512(flags=None, environ=os.environ, machine=None):
    """Whether oneDNN's CPU kernels are x86 AVX2 (or older) ones: an x86 CPU without AVX-512, or ONEDNN_MAX_CPU_ISA
    capped below it. Some of those kernels have bugs the AVX-512 ones lack (train_resnet18's make_net). False on
    other CPUs (Arm), whose oneDNN kernels are others."""
    if (machine or platform.machine()).lower() not in ('x86_64', 'amd64'):
        return False
    flags = cpu_flags() if flags is None else flags
    capped = onednn_cap(environ) in ISA_CAPS_BELOW_AVX512
    return capped or not all(flag in flags for flag in AVX512_CORE_FLAGS)


def resolve_dtype(name, device, allowed=DTYPES, flags=None):
    """'auto' as the device's fastest format among those a script allows (train_resnet18 has no fp16); the others
    as given."""
    if name != 'auto':
        return name
    if device.split(':')[0] == 'cuda':
        return next(dtype for dtype in ('fp16', 'bf16', 'fp32') if dtype in allowed)
    return 'bf16' if native_bf16(flags) else 'fp32'


def autocast(device, dtype):
    """The context one training step's forward and loss (or one eval pass) run in: bf16 autocast for bf16, none
    otherwise (fp16 and fp32 weights compute in their own format). Enter it per step (see the module docstring)."""
    if dtype != 'bf16':
        return contextlib.nullcontext()
    import torch
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def input_dtype(dtype):
    """The dtype of the loader's batches: fp16 for fp16 weights; fp32 otherwise (autocast casts at each conv)."""
    import torch
    return torch.float16 if dtype == 'fp16' else torch.float32


def separate_inductor_cache(environ=os.environ):
    """Inductor's on-disk cache does not key its C++ kernels on ATEN_CPU_CAPABILITY: kernels compiled for AVX-512
    were reused under ATEN_CPU_CAPABILITY=avx2 and made main9's loss NaN (CI, issue 21). With the variable set and
    no TORCHINDUCTOR_CACHE_DIR of the user's, compiled kernels go to a cache of that capability's own."""
    capability = environ.get('ATEN_CPU_CAPABILITY', '').strip().lower()
    if capability and 'TORCHINDUCTOR_CACHE_DIR' not in environ:
        try:
            from torch._inductor.runtime.cache_dir_utils import default_cache_dir
            cache = default_cache_dir()
        except ImportError:  # a private module: where a later torch moves it, torch's usual place by hand
            import getpass
            import tempfile
            cache = os.path.join(tempfile.gettempdir(), f'torchinductor_{getpass.getuser()}')
        environ['TORCHINDUCTOR_CACHE_DIR'] = f'{cache}-aten-{capability}'
