"""The README's step-benchmark table, generated from results/bench/step__*.jsonl (`python tools/bench_step.py`):
one training step of a rung's net in fp32 and in bf16, alternating in one process, one row per benchmark run.
It answers "how much faster is bf16 here", with the machine that says why: the CPU's model, the instruction set
torch's kernels use, and whether it has AMX tiles (or, on a GPU, its name). Rows measured under a oneDNN cap
(ONEDNN_MAX_CPU_ISA, emulating an older CPU) say so.
"""
from pathlib import Path

from stats.bench import BENCH, read_bench_rows

HEADING = ('**Step benchmark** (`python tools/bench_step.py`: one training step of the rung\'s net, fp32 and bf16 '
           'alternating in one process; median seconds per step)')
HEADER = ['script', 'batch', 'device', 'ISA torch uses', 'AMX', 'fp32 s/step', 'bf16 s/step', 'fp32 / bf16', 'steps',
          'date']
CAPTION = ('bf16: autocast over the forward and the loss with fp32 master weights (`common/precision.py`). AMX: '
           "Intel's bf16 matrix tiles; without them a CPU with AVX-512 BF16 runs bf16 on its vector units, and one "
           'with neither emulates it, far slower than fp32 (`ONEDNN_MAX_CPU_ISA=AVX2 python tools/bench_step.py` '
           'measures that on this CPU; such a row names the cap in its ISA column).')


def machine_cells(row):
    """(device, ISA, AMX) of one row: the CPU's for a CPU row, the GPU's name for a GPU row."""
    cpu = row.get('cpu_info') or {}
    if row['device'] != 'cpu':
        return row['device'], '', ''
    isa = cpu.get('torch_isa', 'unknown')
    cap = row['settings'].get('onednn_max_cpu_isa')
    if cap:
        isa += f' (oneDNN capped at {cap})'
    amx = {True: 'yes', False: 'no'}.get(cpu.get('amx_bf16'), 'unknown')
    return f"CPU: {cpu.get('model', 'unknown')}, {cpu.get('cores', '?')} cores", isa, amx


def bench_row(row):
    m, settings = row['measurements'], row['settings']
    return [f"`{settings['script']}`", str(settings['batch_size']), *machine_cells(row),
            f"{m['fp32_seconds_per_step']:.3f}", f"{m['bf16_seconds_per_step']:.3f}", f"{m['fp32_over_bf16']:.2f}x",
            str(settings['steps']), row['date'][:10]]


def step_bench_table(results):
    """Markdown for the step-benchmark rows under `results`, oldest first; None when there is none."""
    rows = [row for path in sorted(Path(results).glob(f'{BENCH}/step__*.jsonl')) for row in read_bench_rows(path)]
    if not rows:
        return None
    rows.sort(key=lambda row: row['date'])
    return '\n'.join([HEADING, '', '| ' + ' | '.join(HEADER) + ' |', '|' + '---|' * len(HEADER),
                      *('| ' + ' | '.join(bench_row(row)) + ' |' for row in rows), '', CAPTION])
