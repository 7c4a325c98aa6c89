"""ternary94.py = main8_compile.py + ternary weights by default, in a wider net trained longer without dirac init,
to reach 94%.
Every 3x3 conv trains as BitNet b1.58 ternary weights (ternary/quant.py: absmean scale, codes in {-1, 0, 1},
straight-through gradients) and is ternary at inference (ternary.export_packed). Two small layers stay full
precision, as in casted_airbench.py below and in BitNet's own nets: the whitening conv, computed from the data
and never trained (288 weights; --no-ternary-keep-first quantizes it too), and the classifier (3,840 weights, no
share of the FLOPs worth naming; --no-ternary-keep-last quantizes it too).
Measured: the defaults below reach 94% with ternary weights. On the CPU in bf16, n = 10 (seeds 0 to 9, 2026-12-04 to
2026-12-05): mean TTA accuracy 94.23%, std 0.14, 95% CI 94.13 to 94.33%, every run >= 94% (94.03 to 94.46%); mean >
94% by the one-sided t-test, p = 0.00031. Seeds 2 to 9 alone (0 and 1 chose this config): mean 94.23%, p = 0.00063.
The runs are of 8bba9c8's code with --no-dirac, the same net and training as this file's defaults (since then dirac
init is off by default and --filter-lr exists, off by default). The log: results/ternary94/nodirac__cpu-bf16.jsonl
(`python -m reports summary` reads it; `--variant nodirac --resume` adds to it). Packed (ternary.export_packed):
1,153,304 bytes against 17,711,376 trained in fp32; reloaded, its eval logits on 2,000 test images equal the trained
net's bit for bit. With main8's dirac init (--dirac) the same net reached 91.80% (n = 1, seed 0, against 94.03% for
that seed without it); without it, at 10 epochs, 93.52% (n = 1). The nearest public numbers
(KellerJordan/research-airbench casted_airbench.py, Aug 2024: weights rounded to {-1, 0, 1} times a fixed scale,
read from its code as possibly five levels in some layers; no dirac init, 10 epochs) are 93.6% at 1.5x width and
94.2% at 2.25x (n = 10 each; the latter at weight decay 0.012). Not yet measured: a GPU run (its times), and whether
a cheaper config reaches 94% too (the search goes on). The search, its plan, caveats and table:
results/ternary94/README.md.
Distillation from the same net in full precision:
    python ternary94.py --no-ternary --save-model teacher.pt && python ternary94.py --teacher teacher.pt
Timed (CUDA events): whitening init, training steps with their augmentation, final TTA eval.
Not timed: data load to the device, per-epoch eval, printing, compilation (paid by the untimed warm-up run).
Run: python ternary94.py --runs 25
"""

#############################################
#           Setup/Hyperparameters           #
#############################################

import math
import sys
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

import airbench
import stats
import ternary
from airbench import CifarLoader, load_data
from common.flags import Flags, at_least, one_of, parse_flags  # [ternary94] its own leaves' ranges
from common.precision import autocast, input_dtype
from common.table import (Timer, check_finite_loss, peak_memory_bytes, print_table_header, print_table_row,
                          reset_peak_memory)
from common.table import compiled_graphs, warn_if_compiled  # [compile] a timed run must not compile

torch.backends.cudnn.benchmark = True

# [ternary94] This script's run-flag defaults: ternary on, the classifier kept in full precision. --no-ternary trains
# the same net in full precision (the teacher for --teacher); --ternary-per-channel gives one scale per output channel.
RUN_DEFAULTS = {'ternary': True, 'ternary_keep_last': True}

hyp = {
    'opt': {
        'epochs': 15.0,             # [ternary94] passes over the training set; a fraction ends mid-epoch
        'batch_size': 1024,         # images per step
        'lr': 11.5,                 # [lookahead] retuned; per 1024 examples, decoupled from momentum
        'momentum': 0.85,           # Nesterov
        'weight_decay': 0.0153,     # per 1024 examples, decoupled from lr and momentum
        'label_smoothing': 0.2,
        'warmup_frac': 0.23,        # [lookahead] retuned; share of steps rising from lr_start to the peak
        'lr_start': 0.2,            # lr multiplier at step 0
        'lr_end': 0.07,             # [lookahead] retuned; lr multiplier at the last step
        'bias_scaler': 64.0,        # [scalebias] lr multiplier of the BatchNorm biases
        'whiten_bias_epochs': 3,    # [freeze] epochs before the whitening bias is frozen
        'ema_every': 5,             # [lookahead] steps between lookahead updates
        'ema_decay': 0.95,          # [lookahead] EMA decay per step, ramped up as (step/total)^3
        'filter_lr': 0.0,           # [ternary94] > 0: 3x3 conv filters held at norm 1, moved this far a step at peak lr
    },
    'aug': {
        'flip': 'alternating',      # [mirror] 'none', 'random' or 'alternating' (airbench/augment.py)
        'translate': 2,             # pixels, reflect-padded
    },
    'net': {
        'block1': 96,               # [ternary94] channels of the three conv groups, 1.5x main8's
        'block2': 384,
        'block3': 384,
        'bn_momentum': 0.4,         # [lookahead] retuned to keep up with it; weight of the new batch statistics
        'logit_scale': 1 / 9,       # scales the classifier's output
        'dirac': False,             # [ternary94] off: PyTorch's default init; --dirac: main2's identity init
        'tta_level': 2,             # 0: plain eval, 1: average with the mirror image, 2: [tta] six views
        'dtype': 'auto',            # 'auto', 'fp32', 'bf16' or 'fp16' (common/precision.py)
        'compile_mode': 'max-autotune',  # [compile] as airbench; CUDA graphs, kernel autotuning (common/flags.py)
    },
}

# The run flags each package declares (its flags.py): --runs, --ternary, --data-dir, ...
FLAGS = (stats.FLAGS, ternary.FLAGS, airbench.FLAGS,  # [tta] tta_level takes 2 too
         Flags('this script', ranges={'dirac': one_of(True, False), 'filter_lr': at_least(0)}))  # [ternary94]

#############################################
#            Network Components             #
#############################################

class BatchNorm(nn.BatchNorm2d):
    """BatchNorm with its weight fixed at 1 (only the bias is trained); kept in fp32 on CUDA."""

    def __init__(self, num_features, momentum, eps=1e-12):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.weight.requires_grad = False


class Conv(nn.Conv2d):
    def __init__(self, in_channels, out_channels, dirac):
        self.dirac = dirac  # [ternary94] set first: nn.Conv2d's __init__ calls reset_parameters
        super().__init__(in_channels, out_channels, kernel_size=3, padding='same', bias=False)

    # [dirac] Identity-like init lets signal pass through the untrained net at full strength; the other
    # filters keep PyTorch's default init (airbench).
    # [ternary94] Off by default: in a ternary net it starts most latent weights at exactly 0, so the absmean scale
    # starts near 0 too, and the net ended 2.2 points lower (seed 0 of each; results/ternary94/README.md, step 3).
    def reset_parameters(self):
        super().reset_parameters()
        if self.dirac:
            weight = self.weight.data
            torch.nn.init.dirac_(weight[:weight.size(1)])


class ConvGroup(nn.Module):
    def __init__(self, channels_in, channels_out, bn_momentum, dirac):
        super().__init__()
        self.conv1 = Conv(channels_in, channels_out, dirac)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = BatchNorm(channels_out, bn_momentum)
        self.conv2 = Conv(channels_out, channels_out, dirac)
        self.norm2 = BatchNorm(channels_out, bn_momentum)
        self.activ = nn.GELU()

    def forward(self, x):
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))

#############################################
#            Network Definition             #
#############################################

class Net(nn.Module):
    def __init__(self, widths, bn_momentum, logit_scale, dirac):
        super().__init__()
        whiten_width = 2 * 3 * 2**2
        # [whiten] a fixed transform set by init_whitening_conv; only its bias is trained
        self.whiten = nn.Conv2d(3, whiten_width, kernel_size=2, padding=0, bias=True)
        self.whiten.weight.requires_grad = False
        self.layers = nn.Sequential(
            ConvGroup(whiten_width, widths[0], bn_momentum, dirac),
            ConvGroup(widths[0], widths[1], bn_momentum, dirac),
            ConvGroup(widths[1], widths[2], bn_momentum, dirac),
            nn.MaxPool2d(3),
        )
        self.head = nn.Linear(widths[2], 10, bias=False)
        self.logit_scale = logit_scale

    def forward(self, x):
        x = F.gelu(self.whiten(x))
        x = self.layers(x).flatten(1)
        return self.head(x) * self.logit_scale


def make_net(net, device):
    """Net from hyp['net'], channels_last; with dtype fp16 (common/precision.py) its BatchNorms stay fp32."""
    widths = (net['block1'], net['block2'], net['block3'])
    model = Net(widths, net['bn_momentum'], net['logit_scale'], net['dirac']).to(device)
    model = model.to(memory_format=torch.channels_last)
    if net['dtype'] == 'fp16':
        model = model.half()
        for module in model.modules():
            if isinstance(module, BatchNorm):
                module.float()
    return model

#############################################
#              Initialization               #
#############################################

def reinit_net(model):
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            module.reset_parameters()


# [whiten] The first conv's filters are the eigenvectors of the covariance of 2x2 training patches, scaled
# by 1/sqrt(eigenvalue), so its outputs start decorrelated with unit variance (hlb-CIFAR10, airbench).
# Each filter also appears negated, so the GELU after it keeps both signs of every component.
def patch_covariance(images, patch_size):
    patches = images.float().unfold(2, patch_size, 1).unfold(3, patch_size, 1)
    patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, images.size(1) * patch_size**2)
    return patches.T @ patches / len(patches)


def init_whitening_conv(conv, images, eps=5e-4):  # [whiten] eps bounds the gain of near-zero eigenvalues
    eigenvalues, eigenvectors = torch.linalg.eigh(patch_covariance(images, conv.kernel_size[0]))
    filters = (eigenvectors.T / torch.sqrt(eigenvalues + eps)[:, None]).view(-1, *conv.weight.shape[1:])
    conv.weight.data.copy_(torch.cat([filters, -filters]))
    conv.bias.data.zero_()  # torch's default draws it at random (+-0.29): that would offset the whitened outputs

#############################################
#             Optimizer Extras              #
#############################################

def make_optimizer(model, total_steps, opt):
    """Nesterov SGD on a loss summed over the batch. Dividing by 1024 * (1 + 1/(1 - momentum)) makes
    `lr` the step per 1024 examples once momentum has built up (its geometric sum plus Nesterov's extra
    gradient term), so lr, momentum and batch size can be tuned one at a time (hlb-CIFAR10, airbench).
    [ternary94] With filter_lr > 0 the 3x3 convs train with FilterNormSGD instead. Returns (optimizers, schedulers)."""
    batch_size = opt['batch_size']
    kilostep_scale = 1024 * (1 + 1 / (1 - opt['momentum']))
    lr = opt['lr'] / kilostep_scale
    wd = opt['weight_decay'] * batch_size / kilostep_scale
    norm_biases = [m.bias for m in model.modules() if isinstance(m, BatchNorm)]
    filters = [m.weight for m in model.modules() if isinstance(m, Conv)] if opt['filter_lr'] > 0 else []  # [ternary94]
    own_ids = {id(p) for p in norm_biases + filters}
    # Frozen parameters may sit in a group: they never get a grad, so SGD skips them.
    other_params = [p for p in model.parameters() if id(p) not in own_ids]
    # PyTorch SGD decays by lr * weight_decay per step; dividing by lr makes the decay wd, whatever the lr.
    # [scalebias] the biases are the BatchNorms' only trained parameters; a larger lr speeds them up
    scaler = opt['bias_scaler']
    param_groups = [dict(params=norm_biases, lr=lr * scaler, weight_decay=wd / (lr * scaler)),
                    dict(params=other_params, lr=lr, weight_decay=wd / lr)]
    optimizers = [torch.optim.SGD(param_groups, momentum=opt['momentum'], nesterov=True)]
    if filters:  # [ternary94]
        optimizers.append(FilterNormSGD(filters, lr=opt['filter_lr'], momentum=opt['momentum']))
    schedule = lr_schedule(total_steps, opt['warmup_frac'], opt['lr_start'], opt['lr_end'])
    return optimizers, [torch.optim.lr_scheduler.LambdaLR(optimizer, schedule) for optimizer in optimizers]


class FilterNormSGD(torch.optim.Optimizer):  # [ternary94]
    """Nesterov momentum on conv filters held at norm 1 (casted_airbench's renormalizing optimizer): before each
    step every output filter is scaled back to norm 1, then moves lr (times the lr schedule) along its own update,
    normalized to norm 1. No weight decay: the norm cannot drift. A BatchNorm follows each conv, so in full
    precision a filter's norm does not matter; with ternary weights it does, as the per-tensor absmean scale is
    shared by all filters. The lookahead averages these filters as it does every other weight, and the run ends
    on that average (filters slightly under norm 1), not renormalized."""

    def __init__(self, params, lr, momentum):
        super().__init__(params, dict(lr=lr, momentum=momentum))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            for weight in [p for p in group['params'] if p.grad is not None]:
                state = self.state[weight]
                if 'momentum_buffer' not in state:
                    state['momentum_buffer'] = torch.zeros_like(weight.grad)
                buffer = state['momentum_buffer'].mul_(group['momentum']).add_(weight.grad)
                update = weight.grad.add(buffer, alpha=group['momentum'])  # Nesterov
                weight.div_(filter_norms(weight))
                weight.sub_(update / filter_norms(update), alpha=group['lr'])


def filter_norms(weight):  # [ternary94] each output filter's norm, shaped to divide the weight; in fp32, as in
    # fp16 the clamp would round to 0 (0/0 for a filter with no gradient) and a sum of squares may overflow
    norms = weight.float().flatten(1).norm(dim=1).clamp_min(1e-12)
    return norms.view(-1, *[1] * (weight.dim() - 1))


def lr_schedule(total_steps, warmup_frac, lr_start, lr_end):
    """Linear rise from lr_start to 1 over the warm-up share of the steps, then linear decay to lr_end."""
    warmup_steps = max(1, int(warmup_frac * total_steps))  # floor, as airbench

    def multiplier(step):
        if step < warmup_steps:
            return lr_start + (1 - lr_start) * step / warmup_steps
        return 1 + (lr_end - 1) * (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return multiplier

# [lookahead] Zhang et al. 2019 via airbench: slow weights (an EMA) pull the fast weights back every few
# steps. BatchNorm running statistics are averaged too, so they need the faster BN momentum to keep up.
class LookaheadState:
    def __init__(self, model):
        self.slow = {name: t.detach().clone() for name, t in model.state_dict().items() if t.is_floating_point()}

    def update(self, model, decay):
        state = model.state_dict()
        with torch.no_grad():
            for name, slow in self.slow.items():
                slow.lerp_(state[name], 1 - decay)
                state[name].copy_(slow)


def ema_decay(step, total_steps, opt):  # [lookahead] (step/total)^3: the slow weights trail closely at first
    every = opt['ema_every']
    return opt['ema_decay']**every * (step / total_steps)**3

#############################################
#                  Logging                  #
#############################################

def epoch_row(run, epoch, loss, outputs, labels, timer):
    train_acc = (outputs.argmax(1) == labels).float().mean().item()
    train_loss = check_finite_loss(run, epoch, loss.item() / len(labels))  # a diverged run stops, unlogged
    return dict(run=run, epoch=epoch, train_loss=train_loss, train_acc=train_acc,
                time_seconds=timer.seconds)

#############################################
#                Evaluation                 #
#############################################

def infer_views(model, inputs, tta_level):
    if tta_level == 0:
        return model(inputs).float().clone()  # kept while the next batch runs: a CUDA graph's replay overwrites it
    if tta_level == 1:
        return 0.5 * model(inputs).float() + 0.5 * model(inputs.flip(-1)).float()  # read before the next call
    # [tta] the mirror pair, plus the mirror pairs of both one-pixel diagonal shifts (airbench)
    padded = F.pad(inputs, (1, 1, 1, 1), mode='reflect')
    shifted = [padded[..., :-2, :-2], padded[..., 2:, 2:]]
    return 0.5 * infer_views(model, inputs, 1) + 0.25 * sum(infer_views(model, x, 1) for x in shifted)


def evaluate(model, loader, dtype, tta_level=0):
    """Test accuracy; with tta_level > 0 the logits of several views of each image are averaged."""
    model.eval()
    with torch.no_grad(), autocast(loader.device.type, dtype):
        images = loader.normalize(loader.images)  # timed in the final eval, as in airbench
        logits = torch.cat([infer_views(model, batch, tta_level) for batch in images.split(2000)])
    if not logits.isfinite().all():  # diverged after the last loss it checked: no accuracy (stats.Trial refuses it)
        return math.nan
    return (logits.argmax(1) == loader.labels).sum().item() / len(loader.labels)  # exact: 9,400 of 10,000 is 0.94

#############################################
#                 Training                  #
#############################################

def cross_entropy_loss(label_smoothing):
    """Cross-entropy per example against labels smoothed by `label_smoothing`, as airbench94; main() sums it.
    It takes the batch's inputs too, unused here: --teacher's distillation loss runs the teacher on them."""
    criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing, reduction='none')
    return lambda outputs, labels, inputs: criterion(outputs, labels)


def main(hyp, run, seed, model, loss_fn, train_loader, test_loader):
    """One run: reinitialize, train for hyp's epochs, evaluate with TTA. Returns the run's result row."""
    torch.manual_seed(seed)
    train_loader.reseed(seed)
    device = train_loader.device.type
    epochs = hyp['opt']['epochs']
    total_steps = math.ceil(epochs * len(train_loader))
    reset_peak_memory(device)
    timer = Timer(device)
    graphs = compiled_graphs()  # [compile]
    reinit_net(model)
    with timer:  # [whiten] from the first 5,000 training images, unaugmented
        init_whitening_conv(model.whiten, train_loader.normalize(train_loader.images[:5000]))
    optimizers, schedulers = make_optimizer(model, total_steps, hyp['opt'])  # [ternary94]
    lookahead = LookaheadState(model)  # [lookahead]
    step = 0
    for epoch in range(math.ceil(epochs)):
        model.train()
        # [freeze] a bias with requires_grad False gets no grad, so SGD skips it (torch.compile recompiles
        # once for this, in the warm-up run)
        model.whiten.bias.requires_grad_(epoch < hyp['opt']['whiten_bias_epochs'])
        with timer:
            for inputs, labels in train_loader:
                with autocast(device, hyp['net']['dtype']):  # per step: autocast keeps its weight copies per region
                    outputs = model(inputs)
                    loss = loss_fn(outputs, labels, inputs).sum()
                model.zero_grad(set_to_none=True)  # [ternary94] the parameters of every optimizer
                loss.backward()
                for optimizer, scheduler in zip(optimizers, schedulers):  # [ternary94] SGD, then FilterNormSGD
                    optimizer.step()
                    scheduler.step()
                step += 1
                if step % hyp['opt']['ema_every'] == 0:  # [lookahead]
                    lookahead.update(model, ema_decay(step, total_steps, hyp['opt']))
                if step == total_steps:
                    if step >= hyp['opt']['ema_every']:  # [lookahead] else the slow weights are still the initial ones
                        lookahead.update(model, decay=1.0)  # [lookahead] end on the slow weights
                    break
        row = epoch_row(run, epoch, loss, outputs, labels, timer)  # before evaluate runs the model again
        val_acc = row['val_acc'] = evaluate(model, test_loader, hyp['net']['dtype'])
        print_table_row(row)
    with timer:
        tta_val_acc = evaluate(model, test_loader, hyp['net']['dtype'], hyp['net']['tta_level'])
    print_table_row(dict(run=run, epoch='eval', val_acc=val_acc, tta_val_acc=tta_val_acc, time_seconds=timer.seconds))
    warn_if_compiled(run, graphs)  # [compile]
    return dict(run=run, seed=seed, epochs=epochs, val_acc=val_acc, tta_val_acc=tta_val_acc,
                time_seconds=timer.seconds, peak_memory_bytes=peak_memory_bytes(device))

#############################################
#                  Session                  #
#############################################

def prepare(hyp, args):
    """What the runs of one invocation share: the model (main() reinitializes it), the loss and the loaders.
    The warm-up loader has random labels: its run only pays for cudnn autotuning and compilation."""
    model = ternary.convert_from_flags(make_net(hyp['net'], args.device), args)  # [ternary] on by default here
    loss_fn = cross_entropy_loss(hyp['opt']['label_smoothing'])
    loss_fn = ternary.distill_from_flags(loss_fn, partial(make_net, hyp['net']), args)  # [ternary] --teacher
    # [compile] static shapes: one graph per batch size (train, eval, last batch)
    model.compile(dynamic=False, mode=hyp['net']['compile_mode'])
    data = load_data(args)
    aug, batch_size = hyp['aug'], hyp['opt']['batch_size']
    augment = dict(train=True, flip=aug['flip'], translate=aug['translate'])  # [mirror] alternating_flip_mask
    batches = input_dtype(hyp['net']['dtype'])  # fp16 batches for fp16 weights, else fp32
    train_loader = CifarLoader(*data['train'], batch_size, args.device, dtype=batches, **augment)
    warmup_loader = train_loader.with_labels(torch.randint_like(train_loader.labels, 10))  # shares the images
    test_loader = CifarLoader(*data['test'], 2000, args.device, dtype=batches)
    return model, loss_fn, train_loader, test_loader, warmup_loader

#############################################
#                 __main__                  #
#############################################

if __name__ == '__main__':
    hyp, args = parse_flags(hyp, FLAGS, description=__doc__, defaults=RUN_DEFAULTS)  # [ternary94]
    trial = stats.Trial(__file__, hyp, args)
    if trial.delegate_to_gpus():
        sys.exit(0)
    model, loss_fn, train_loader, test_loader, warmup_loader = prepare(hyp, args)
    print_table_header()
    if args.warmup:
        main(hyp, 'warmup', args.seed, model, loss_fn, warmup_loader, test_loader)
    for run, seed in trial.pending():
        trial.record(main(hyp, run, seed, model, loss_fn, train_loader, test_loader))
    ternary.save_model(model, args.save_model, __file__)  # [ternary] --save-model, a teacher for --teacher
    ternary.export_from_flags(model, args, test_loader)  # [ternary] --export-packed: the 2-bit file, checked
    trial.report()
