"""Times the ternary kernels on CUDA against their PyTorch references, eager and under torch.compile.

    python -m ternary.bench [--out results]

(a) Weight quantization as a training step does it for every ternary layer: W_q = s·codes from fp16 weights
    of the ladder's shapes, per-tensor and per-channel scales.
(b) Packed inference: int8 activations times 2-bit packed ternary weights at im2col shapes of the ladder's
    convs for a batch of 256 images, beside the dense fp16 matmul (cuBLAS) they replace.

Each entry is the median over 100 CUDA-event-timed groups of 10 calls, after 10 warm-up calls (and after
compilation). Every Triton output is checked for exact equality with its reference before it is timed.
The table is printed and appended to results/bench/ternary-kernels__<gpu>.jsonl.
"""
import argparse
import statistics
import sys

import torch

from common.errors import UserError, install_excepthook
from common.flags import Parser
from stats.bench import check_bench_out, record_bench
from ternary import quant
from ternary.pack import pack_codes

WEIGHT_SHAPES = [(64, 24, 3, 3), (256, 64, 3, 3), (256, 256, 3, 3), (10, 256)]
# name: (M = images x output pixels, K = C_in x 3 x 3, N = C_out), batch 256 at airbench94 resolutions
MATMUL_SHAPES = {'block1 64->64 @31x31': (256 * 31 * 31, 64 * 9, 64),
                 'block2 64->256 @15x15': (256 * 15 * 15, 64 * 9, 256),
                 'block3 256->256 @7x7': (256 * 7 * 7, 256 * 9, 256),
                 'head 256->10': (256, 256, 10)}


def time_us(fn, reps=100, inner=10, warmup=10):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(inner):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / inner)
    return statistics.median(times)


def compiled(fn):
    torch.compiler.reset()  # a fresh cache per shape: no recompile limits, no dynamic-shape graphs
    return torch.compile(fn)


def print_row(name, times, base):
    """Prints one row and returns it as a results entry: microseconds and Triton's speedups."""
    speedups = {b: times[b] / times['triton'] for b in base}
    print(f'{name:40s}' + ''.join(f'{t:12.1f}' for t in times.values()) +
          ''.join(f'{s:18.2f}x' for s in speedups.values()))
    return {'name': name, 'median_us': times, 'triton_speedup_vs': speedups}


def print_header(title, columns, base):
    print(f'\n{title}\n{"":40s}' + ''.join(f'{c:>12s}' for c in columns) +
          ''.join(f'{"speedup vs " + b:>19s}' for b in base))


def bench_weight_quant(kernels):
    base, rows = ['eager', 'compile'], []
    for per_channel in (False, True):
        print_header(f'(a) weight quantization, fp16, {"per-channel" if per_channel else "per-tensor"} '
                     f'scale: median us per call', base + ['triton'], base)
        totals = dict.fromkeys(base + ['triton'], 0.0)
        for shape in WEIGHT_SHAPES:
            w = torch.randn(shape, device='cuda', dtype=torch.half)
            reference = lambda: quant.fake_quant_weight(w, per_channel)  # noqa: E731
            triton_fn = lambda: kernels.ternary_codes_and_weight(w, per_channel)[2]  # noqa: E731
            check(triton_fn(), reference(), 'x'.join(map(str, shape)))
            times = {'eager': time_us(reference), 'compile': time_us(compiled(reference)),
                     'triton': time_us(triton_fn)}
            rows.append(print_row('x'.join(map(str, shape)), times, base) | {'per_channel': per_channel})
            totals = {k: totals[k] + times[k] for k in totals}
        rows.append(print_row('all four (one step)', totals, base) | {'per_channel': per_channel})
    return rows


def bench_packed_matmul(kernels):
    base, rows = ['fp16', 'eager', 'compile'], []
    print_header('(b) packed inference matmul (M x K x N): median us per call; fp16 dense = cuBLAS, unquantized',
                 ['fp16 dense', 'ref eager', 'ref compile', 'triton'], base)
    for name, (m, k, n) in MATMUL_SHAPES.items():
        x_q = torch.randint(-127, 128, (m, k), device='cuda', dtype=torch.int8)
        x_scale, w_scale = torch.rand(m, device='cuda'), torch.rand(n, device='cuda')
        packed = pack_codes(torch.randint(-1, 2, (n, k), device='cuda', dtype=torch.int8))
        x_half, w_half = torch.randn(m, k, device='cuda', dtype=torch.half), torch.randn(n, k, device='cuda').half()
        args = (x_q, x_scale, packed, w_scale)
        check(kernels.packed_matmul(*args), kernels.packed_matmul_reference(*args), name)
        reference_compiled = compiled(kernels.packed_matmul_reference)
        times = {'fp16': time_us(lambda: x_half @ w_half.T),
                 'eager': time_us(lambda: kernels.packed_matmul_reference(*args)),
                 'compile': time_us(lambda: reference_compiled(*args)),
                 'triton': time_us(lambda: kernels.packed_matmul(*args))}
        rows.append(print_row(f'{name} ({m}x{k}x{n})', times, base))
    return rows


def check(out, reference, name):
    if not torch.equal(out, reference):
        raise SystemExit(f'{name}: Triton output differs from the reference; not timing a wrong kernel')


def main():
    install_excepthook()
    parser = Parser(prog='python -m ternary.bench', description=__doc__.splitlines()[0], allow_abbrev=False,
                    formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--out', default='results', help='results folder: the table is appended to bench/ there')
    args = parser.parse_args()
    check_bench_out(args.out)
    if not torch.cuda.is_available():  # an error, so that a GPU job that lost its GPU does not pass as done
        raise UserError('ternary.bench needs a CUDA GPU (it times CUDA kernels) and none is visible: run it on a '
                        'GPU machine')
    try:
        import triton
        from ternary import kernels
    except ImportError:
        raise UserError('ternary.bench needs Triton and it is not installed: pip install triton') from None
    print(f'{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, '
          f'CUDA {torch.version.cuda}')
    measurements = {'weight_quant': bench_weight_quant(kernels), 'packed_matmul': bench_packed_matmul(kernels)}
    settings = {'weight_shapes': WEIGHT_SHAPES, 'matmul_shapes': MATMUL_SHAPES, 'reps': 100, 'inner': 10}
    print('appended to ' + str(record_bench('ternary-kernels', 'cuda', measurements, settings, args.out)))


if __name__ == '__main__':
    sys.exit(main())
