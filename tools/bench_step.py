"""Benchmark (not a test): one training step of a rung's net in fp32 and in bf16, side by side in one process.

python tools/bench_step.py [--script main7_mirror.py] [--steps 5] [--batch-size 0] [--device cpu] [--out results]

Both formats get the rung's own net (make_net, channels_last), loss, optimizer and the per-step autocast region
its main() uses (common/precision.py), on one random batch of the rung's batch size. Each gets two untimed
warm-up steps (oneDNN picks and caches its kernels), then the steps alternate fp32, bf16, fp32, ... so a load on
the machine that comes and goes falls on both alike. A step is the forward, the loss, the backward and the
optimizer step; no data loading, no augmentation. Timed by the wall clock on the CPU (CUDA events on a GPU);
the medians and their ratio are appended to results/bench/step__<device>.jsonl with the CPU's name and flags.
"""
import argparse
import inspect
import os
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from common.errors import UserError, install_excepthook  # noqa: E402  (after the path: run as a file)
from common.flags import Parser, parse_flags  # noqa: E402
from common.precision import autocast  # noqa: E402
from reports.sidebyside import import_script  # noqa: E402
from stats.bench import check_bench_out, record_bench  # noqa: E402

RUNG_PARTS = ('hyp', 'FLAGS', 'make_net', 'make_optimizer', 'cross_entropy_loss')


def load_rung(script):
    path = ROOT / script
    rung = import_script(path, 'bench_' + path.stem) if path.is_file() and path.suffix == '.py' else None
    if rung is None or not all(hasattr(rung, name) for name in RUNG_PARTS):
        raise UserError(f'--script {script} is not a rung of this repository: pass e.g. main7_mirror.py')
    return rung


def make_optimizers(rung, model, opt):
    """The rung's optimizers as a list: main9_muon's make_optimizer also takes the steps of an epoch and returns
    SGD and Muon together; ternary94's returns a list too (FilterNormSGD beside SGD with --filter-lr)."""
    if 'epoch_steps' in inspect.signature(rung.make_optimizer).parameters:
        return rung.make_optimizer(model, 1000, 50, opt)[0]
    optimizers = rung.make_optimizer(model, 1000, opt)[0]
    return optimizers if isinstance(optimizers, list) else [optimizers]


def make_step(rung, dtype, batch_size, device):
    """A function doing one training step of the rung in `dtype`, as its main() does."""
    hyp, _ = parse_flags(rung.hyp, rung.FLAGS, ['--device', device, '--dtype', dtype,
                                                 '--batch-size', str(batch_size)])
    model = rung.make_net(hyp['net'], device)
    model.train()
    optimizers = make_optimizers(rung, model, hyp['opt'])
    loss_fn = rung.cross_entropy_loss(hyp['opt']['label_smoothing'])
    generator = torch.Generator(device).manual_seed(0)
    inputs = torch.randn(batch_size, 3, 32, 32, generator=generator, device=device)
    inputs = inputs.to(next(model.parameters()).dtype).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch_size,), generator=generator, device=device)

    def step():
        with autocast(device, dtype):
            loss = loss_fn(model(inputs), labels, inputs).sum()
        model.zero_grad(set_to_none=True)
        loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        if device == 'cuda':
            torch.cuda.synchronize()
    return step


def time_alternating(steps, rounds):
    """{name: [seconds per step]}: each step function once per round, in turn, after two untimed steps each."""
    for step in steps.values():
        step(), step()
    seconds = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            seconds[name].append(time.perf_counter() - start)
    return seconds


def main(argv=None):
    install_excepthook(stop_handlers=argv is None)
    parser = Parser(prog='python tools/bench_step.py', description=__doc__.splitlines()[0], allow_abbrev=False,
                    formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--script', default='main7_mirror.py', help='the rung whose net and loss are timed')
    parser.add_argument('--steps', type=int, default=5, help='timed steps per format')
    parser.add_argument('--batch-size', type=int, default=0, help="0: the rung's own")
    parser.add_argument('--device', default='cpu', choices=('cpu', 'cuda'), help='where the step runs')
    parser.add_argument('--out', default='results', help='results folder: the row is appended to bench/ there')
    args = parser.parse_args(argv)
    if args.steps < 1 or args.batch_size < 0:
        raise UserError(f'--steps must be >= 1 and --batch-size >= 0, got {args.steps} and {args.batch_size}')
    check_bench_out(args.out)
    rung = load_rung(args.script)
    batch_size = args.batch_size or rung.hyp['opt']['batch_size']
    steps = {dtype: make_step(rung, dtype, batch_size, args.device) for dtype in ('fp32', 'bf16')}
    seconds = time_alternating(steps, args.steps)
    medians = {f'{dtype}_seconds_per_step': statistics.median(values) for dtype, values in seconds.items()}
    ratio = medians['fp32_seconds_per_step'] / medians['bf16_seconds_per_step']
    measurements = {**medians, 'fp32_over_bf16': ratio, 'seconds': seconds}
    settings = {'script': args.script, 'batch_size': batch_size, 'steps': args.steps, 'memory_format': 'channels_last',
                'onednn_max_cpu_isa': os.environ.get('ONEDNN_MAX_CPU_ISA')}  # a cap emulates what older CPUs do
    path = record_bench('step', args.device, measurements, settings, out=args.out)
    print(f"{args.script}, batch {batch_size}: fp32 {medians['fp32_seconds_per_step']:.3f} s/step, bf16 "
          f"{medians['bf16_seconds_per_step']:.3f} s/step, fp32/bf16 {ratio:.2f}x (median of {args.steps}); "
          f'row appended to {path}')


if __name__ == '__main__':
    main()
