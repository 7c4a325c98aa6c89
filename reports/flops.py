"""TFLOPs per run of each script, counted by torch.utils.flop_counter.FlopCounterMode: a measure of the work that
is the same on every device. `python -m reports flops` writes results/flops.json and prints the table below.

Each script is counted through its own functions, default hyp, fp32, on the CPU, on random data:
  step:  `make_net`, forward on random channels_last images at the script's batch size, its `cross_entropy_loss`,
         backward. Where the whitening bias freezes after `whiten_bias_epochs` (main4 on), both states are
         counted: with the bias frozen the backward skips the first 3x3 conv's input gradient.
  image: `infer_views` at the script's tta_level on EVAL_IMAGES images, divided by their number (in eval mode every
         image costs the same, whatever the batch).
  train = step FLOPs x steps, with steps = ceil(epochs * (50,000 // batch_size)) as every main() counts them;
  eval = image FLOPs x 10,000 test images (the final TTA eval); total = train + eval.
The per-epoch evals (one plain pass over the test set after each epoch, untimed) are not in the total, nor in the
published counts; total_with_epoch_evals adds them. FlopCounterMode counts matrix products and convolutions (2
FLOPs per multiply-add) and their gradients, nothing else. What it leaves out is under 1% of a run: BatchNorm,
GELU, pooling and the loss (a few FLOPs per activation, against 2 x 9 x channels per conv output); SGD and the
lookahead (a few FLOPs per weight per step: ~10 MFLOPs for main7's 2M weights, against ~0.7 TFLOPs for its
step); Muon's Newton-Schulz iterations in main9 (6.3 GFLOPs per step as FlopCounterMode counts its optimizer
step, against 1.4 TFLOPs); the whitening init (one 12 x 12 covariance of 5,000 images' 2x2 patches, ~1.4 GFLOPs
per run).
The published counts match these to 1% (main0 to main8 to 0.1%; ResNet-18 4,394 against 4,350), so they cover the
same: the final TTA eval but not the per-epoch evals, and a backward without the gradients nothing needs (main4's
frozen whitening bias is its 3% less than main3's; a flat "backward = 2 x forward" would not show it).
torch is imported inside the counting functions: reports.table reads flops.json, and `python -m reports table`
starts without torch (tests/test_project.py).
"""
import contextlib
import io
import json
import math
from pathlib import Path

from common.errors import UserError
from common.files import atomic_output, read_utf8

TRAIN_IMAGES, TEST_IMAGES = 50_000, 10_000
EVAL_IMAGES = 50  # random images for the per-image eval count
FLOPS_FILE = 'flops.json'  # in the results folder
# TFLOPs per run in airbench's ablation table (Jordan 2024, arXiv:2404.00498, as quoted in issue 22), by the rung
# that reproduces each of its lines.
PUBLISHED_TFLOPS = {
    'train_resnet18.py': 4350, 'main0_network.py': 1223, 'main1_whiten.py': 735, 'main2_dirac.py': 631,
    'main3_scalebias.py': 474, 'main4_freeze.py': 461, 'main5_lookahead.py': 410, 'main6_tta.py': 380,
    'main7_mirror.py': 350, 'main8_compile.py': 350,
}


def count_flops(fn):
    """FLOPs of fn() as FlopCounterMode counts them."""
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def step_flops(rung, model, hyp, batch_size, whiten_bias_grad=None):
    """One training step's forward, loss and backward. whiten_bias_grad: whether the whitening bias takes a
    gradient (None: as built)."""
    import torch
    if whiten_bias_grad is not None:
        model.whiten.bias.requires_grad_(whiten_bias_grad)
    model.train()
    inputs = torch.randn(batch_size, 3, 32, 32).to(memory_format=torch.channels_last)
    labels = torch.randint(10, (batch_size,))
    loss_fn = rung.cross_entropy_loss(hyp['opt']['label_smoothing'])
    return count_flops(lambda: loss_fn(model(inputs), labels, inputs).sum().backward())


def image_flops(rung, model, tta_level):
    """Eval FLOPs per image at a TTA level."""
    import torch
    model.eval()
    inputs = torch.randn(EVAL_IMAGES, 3, 32, 32).to(memory_format=torch.channels_last)
    with torch.no_grad():
        return count_flops(lambda: rung.infer_views(model, inputs, tta_level)) / EVAL_IMAGES


def count_script(path, argv=()):
    """The counts of one script with its default hyp (argv: more of its flags, for tests) as results/flops.json
    stores them."""
    import torch

    from common.flags import parse_flags
    from reports.sidebyside import import_script
    path = Path(path)
    rung = import_script(path, 'flops_' + path.stem)
    with contextlib.redirect_stdout(io.StringIO()):  # parse_flags and the ternary switch print the config
        hyp, args = parse_flags(rung.hyp, rung.FLAGS, ['--device', 'cpu', '--dtype', 'fp32', *argv])
        # The rung's own --ternary switch, as its prepare() applies it (on by default in ternary94.py); through
        # the rung, since reports import no ternary (tests/test_project.py).
        model = rung.ternary.convert_from_flags(rung.make_net(hyp['net'], 'cpu'), args)
    opt = hyp['opt']
    steps_per_epoch = TRAIN_IMAGES // opt['batch_size']
    steps = math.ceil(opt['epochs'] * steps_per_epoch)
    if 'whiten_bias_epochs' in opt:  # [freeze] the bias trains in the epochs before whiten_bias_epochs
        bias_steps = min(steps, opt['whiten_bias_epochs'] * steps_per_epoch)
        train = (bias_steps * step_flops(rung, model, hyp, opt['batch_size'], True)
                 + (steps - bias_steps) * step_flops(rung, model, hyp, opt['batch_size'], False))
    else:
        train = steps * step_flops(rung, model, hyp, opt['batch_size'])
    evals = TEST_IMAGES * image_flops(rung, model, hyp['net']['tta_level'])
    epoch_evals = math.ceil(opt['epochs']) * TEST_IMAGES * image_flops(rung, model, 0)
    return dict(batch_size=opt['batch_size'], epochs=opt['epochs'], steps=steps, train_tflops=tera(train),
                eval_tflops=tera(evals), total_tflops=tera(train + evals), epoch_evals_tflops=tera(epoch_evals),
                total_with_epoch_evals_tflops=tera(train + evals + epoch_evals), torch=torch.__version__)


def tera(flops):
    return round(flops / 1e12, 3)


def read_counts(results):
    """{script: counts} of results/flops.json; {} when it is absent."""
    path = Path(results) / FLOPS_FILE
    if not path.is_file():
        return {}
    try:
        return json.loads(read_utf8(path, 'rewrite it with python -m reports flops'))
    except json.JSONDecodeError as exc:
        raise UserError(f'{path} is not JSON ({exc.msg}, line {exc.lineno}): rewrite it with '
                        'python -m reports flops') from None


def write_counts(results, counts, merge=True):
    """Adds `counts` to results/flops.json (merge=False: writes them in its place), in one step (common/files.py)."""
    path = Path(results) / FLOPS_FILE
    merged = read_counts(results) | counts if merge else counts
    with atomic_output(path, 'the FLOP counts') as partial:
        Path(partial).write_text(json.dumps(merged, indent=1) + '\n')
    return path


def format_ratio(counted, published):
    return f'{counted / published:.2f}' if published else ''


def flops_table(counts):
    """Plain-text lines: ours beside the published figure, per script."""
    header = (f'{"script":<20} {"batch":>5} {"steps":>5} {"train":>8} {"eval":>7} {"total":>8} {"+epoch evals":>12} '
              f'{"published":>9} {"ratio":>5}')
    lines = [header, '-' * len(header)]
    for script, c in counts.items():
        published = PUBLISHED_TFLOPS.get(script)
        lines.append(f'{script:<20} {c["batch_size"]:>5} {c["steps"]:>5} {c["train_tflops"]:>8.1f} '
                     f'{c["eval_tflops"]:>7.1f} {c["total_tflops"]:>8.1f} {c["total_with_epoch_evals_tflops"]:>12.1f} '
                     f'{published or "":>9} {format_ratio(c["total_tflops"], published):>5}')
    return lines + ['TFLOPs per run; ratio: total / published (airbench)']
