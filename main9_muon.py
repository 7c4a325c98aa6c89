"""main9_muon.py = main8_compile.py + Muon for the 3x3 convs, with airbench94_muon's retune.
Each conv's update is orthogonalized (Newton-Schulz); SGD trains the biases and head; no lookahead, 8 epochs.
Unlike airbench94_muon.py (torch's random draw, +-0.29), the whitening bias starts at zero, as on every rung.
Timed (CUDA events): whitening init (main1 on), training steps with their augmentation, final TTA eval.
Not timed: data load to the device, per-epoch eval, printing, compilation (paid by the untimed warm-up run).
Run: python main9_muon.py --runs 25
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
from common.flags import parse_flags  # [tta] no narrower tta_level range to declare
from common.flags import Flags, fraction, positive  # [muon] the ranges of its own hyp leaves
from common.precision import autocast, input_dtype
from common.table import (Timer, check_finite_loss, peak_memory_bytes, print_table_header, print_table_row,
                          reset_peak_memory)
from common.table import compiled_graphs, warn_if_compiled  # [compile] a timed run must not compile

torch.backends.cudnn.benchmark = True

hyp = {
    'opt': {
        'epochs': 8.0,              # passes over the training set; a fraction ends mid-epoch
        'batch_size': 2000,         # [muon] retuned; images per step
        'lr': 0.67,                 # [muon] retuned: the head's, per step of the summed loss (no 1024 scaling)
        'momentum': 0.85,           # Nesterov
        'weight_decay': 2e-6,       # [muon] retuned: per example (times batch_size per step), decoupled from lr
        'label_smoothing': 0.2,
        'warmup_frac': 0.0,         # [muon] retuned: none; share of steps rising from lr_start to the peak
        'lr_start': 1.0,            # [muon] retuned; lr multiplier at step 0
        'lr_end': 0.0,              # [muon] retuned; lr multiplier at the last step
        'bias_lr': 0.053,           # [muon] the whitening and BatchNorm biases' lr, in place of bias_scaler
        'whiten_bias_epochs': 3,    # [freeze] epochs before the whitening bias is frozen
        'muon_lr': 0.24,            # [muon] the 3x3 convs' lr, no weight decay
        'muon_momentum': 0.6,       # [muon] Nesterov, for the 3x3 convs
    },
    'aug': {
        'flip': 'alternating',      # [mirror] 'none', 'random' or 'alternating' (airbench/augment.py)
        'translate': 2,             # pixels, reflect-padded
    },
    'net': {
        'block1': 64,               # channels of the three conv groups
        'block2': 256,
        'block3': 256,
        'bn_momentum': 0.4,         # [lookahead] retuned to keep up with it; weight of the new batch statistics
        'logit_scale': 1 / 256,     # [muon] retuned: airbench94_muon's 1/width at block3 256 (fixed, not per width)
        'tta_level': 2,             # 0: plain eval, 1: average with the mirror image, 2: [tta] six views
        'dtype': 'auto',            # 'auto', 'fp32', 'bf16' or 'fp16' (common/precision.py)
        'compile_mode': 'max-autotune',  # [compile] as airbench; CUDA graphs, kernel autotuning (common/flags.py)
    },
}

# [muon] the ranges of the leaves only this rung reads (common/flags.py declares those the rungs share)
MUON_FLAGS = Flags('muon', ranges={'bias_lr': positive(), 'muon_lr': positive(), 'muon_momentum': fraction(False)})
# The run flags each package declares (its flags.py): --runs, --ternary, --data-dir, ...
FLAGS = (stats.FLAGS, ternary.FLAGS, airbench.FLAGS, MUON_FLAGS)  # [tta] tta_level takes 2 too; [muon] its leaves

#############################################
#            Network Components             #
#############################################

class BatchNorm(nn.BatchNorm2d):
    """BatchNorm with its weight fixed at 1 (only the bias is trained); kept in fp32 on CUDA."""

    def __init__(self, num_features, momentum, eps=1e-12):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.weight.requires_grad = False


class Conv(nn.Conv2d):
    def __init__(self, in_channels, out_channels):
        super().__init__(in_channels, out_channels, kernel_size=3, padding='same', bias=False)

    # [dirac] Identity-like init lets signal pass through the untrained net at full strength; the other
    # filters keep PyTorch's default init (airbench).
    def reset_parameters(self):
        super().reset_parameters()
        weight = self.weight.data
        torch.nn.init.dirac_(weight[:weight.size(1)])


class ConvGroup(nn.Module):
    def __init__(self, channels_in, channels_out, bn_momentum):
        super().__init__()
        self.conv1 = Conv(channels_in, channels_out)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = BatchNorm(channels_out, bn_momentum)
        self.conv2 = Conv(channels_out, channels_out)
        self.norm2 = BatchNorm(channels_out, bn_momentum)
        self.activ = nn.GELU()

    def forward(self, x):
        x = self.activ(self.norm1(self.pool(self.conv1(x))))
        return self.activ(self.norm2(self.conv2(x)))

#############################################
#            Network Definition             #
#############################################

class Net(nn.Module):
    def __init__(self, widths, bn_momentum, logit_scale):
        super().__init__()
        whiten_width = 2 * 3 * 2**2
        # [whiten] a fixed transform set by init_whitening_conv; only its bias is trained
        self.whiten = nn.Conv2d(3, whiten_width, kernel_size=2, padding=0, bias=True)
        self.whiten.weight.requires_grad = False
        self.layers = nn.Sequential(
            ConvGroup(whiten_width, widths[0], bn_momentum),
            ConvGroup(widths[0], widths[1], bn_momentum),
            ConvGroup(widths[1], widths[2], bn_momentum),
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
    model = Net((net['block1'], net['block2'], net['block3']), net['bn_momentum'], net['logit_scale']).to(device)
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
    model.head.weight.data /= model.head.weight.data.std()  # [muon] unit std, as airbench94_muon (with logit_scale)


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

def make_optimizer(model, total_steps, epoch_steps, opt):  # [muon] SGD and Muon, each with its scheduler
    """Nesterov SGD on a loss summed over the batch for the biases and the head, Muon for the six 3x3 convs,
    as airbench94_muon: each lr is a step per batch, with no 1024 scaling. Every lr follows lr_schedule, the
    whitening bias's over its whiten_bias_epochs (of epoch_steps steps each), after which it is frozen."""
    batch_size = opt['batch_size']
    lr, bias_lr = opt['lr'], opt['bias_lr']  # [muon] the head's and the biases'
    wd = opt['weight_decay'] * batch_size  # [muon]
    norm_biases = [m.bias for m in model.modules() if isinstance(m, BatchNorm)]
    filters = [m.weight for m in model.modules() if isinstance(m, Conv)]  # [muon] ternary convs subclass Conv too
    # PyTorch SGD decays by lr * weight_decay per step; dividing by lr makes the decay wd, whatever the lr.
    param_groups = [dict(params=[model.whiten.bias], lr=bias_lr, weight_decay=wd / bias_lr),  # [muon]
                    dict(params=norm_biases, lr=bias_lr, weight_decay=wd / bias_lr),
                    dict(params=[model.head.weight], lr=lr, weight_decay=wd / lr)]
    optimizer = torch.optim.SGD(param_groups, momentum=opt['momentum'], nesterov=True)
    muon = Muon(filters, lr=opt['muon_lr'], momentum=opt['muon_momentum'])  # [muon]
    schedule = lr_schedule(total_steps, opt['warmup_frac'], opt['lr_start'], opt['lr_end'])
    whiten_schedule = lr_schedule(opt['whiten_bias_epochs'] * epoch_steps, opt['warmup_frac'], opt['lr_start'],
                                  opt['lr_end'])  # [muon] < 0 past its epochs, when the bias is frozen (no grad)
    return [optimizer, muon], [torch.optim.lr_scheduler.LambdaLR(optimizer, [whiten_schedule, schedule, schedule]),
                               torch.optim.lr_scheduler.LambdaLR(muon, schedule)]  # [muon]


def lr_schedule(total_steps, warmup_frac, lr_start, lr_end):
    """Linear rise from lr_start to 1 over the warm-up share of the steps, then linear decay to lr_end."""
    warmup_steps = int(warmup_frac * total_steps)  # floor, as airbench; [muon] may be 0: 1 - step/total from step 0

    def multiplier(step):
        if step < warmup_steps:
            return lr_start + (1 - lr_start) * step / warmup_steps
        return 1 + (lr_end - 1) * (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return multiplier

# [muon] Muon (Jordan 2024) as airbench94_muon, with no lookahead (LookaheadState, ema_decay, ema_every gone).
# Each conv's momentum update, as a (C_out, C_in*3*3) matrix, becomes a near-orthogonal one with the same singular
# vectors: every direction moves at about the same rate. torch.optim.Muon refuses 4-D weights, hence these lines.
def newton_schulz(grad, steps=3, eps=1e-7):
    """About U V^T for grad = U S V^T, in bf16: grad / |grad|_F has singular values <= 1, and the quintic Newton-
    Schulz step x <- 3.4445x - 4.7750x^3 + 2.0315x^5 acts on each. Its slope at 0 is pushed past convergence:
    3 steps take every value in [0.02, 1] into (0.68, 1.21) (exact arithmetic), not to 1, which trains as well
    (Jordan 2024). Random matrices of the rung's shapes come out in (0.6, 1.25) (tests/test_muon.py)."""
    x = grad.bfloat16()
    x = x / (x.norm() + eps)
    tall = x.size(0) > x.size(1)
    x = x.T if tall else x  # x @ x.T is then the smaller Gram matrix
    for _ in range(steps):
        gram = x @ x.T
        x = 3.4445 * x + (-4.7750 * gram + 2.0315 * gram @ gram) @ x
    return x.T if tall else x


orthogonalize = torch.compile(newton_schulz, dynamic=False)  # [muon] as airbench94_muon; in the warm-up run


class Muon(torch.optim.Optimizer):  # [muon]
    """Nesterov momentum, its update orthogonalized. Before each step the weight is rescaled to Frobenius norm
    sqrt(C_out), so its scale cannot drift and needs no weight decay."""

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
                weight.mul_(len(weight)**0.5 / weight.norm())
                weight.add_(orthogonalize(update.flatten(1)).view_as(weight), alpha=-group['lr'])

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
    optimizers, schedulers = make_optimizer(model, total_steps, len(train_loader), hyp['opt'])  # [muon]
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
                model.zero_grad(set_to_none=True)  # [muon] the parameters of both optimizers
                loss.backward()
                for optimizer, scheduler in zip(optimizers, schedulers):  # [muon] SGD, then Muon
                    optimizer.step()
                    scheduler.step()
                step += 1
                if step == total_steps:
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
    model = ternary.convert_from_flags(make_net(hyp['net'], args.device), args)  # [ternary] no-op by default
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
    hyp, args = parse_flags(hyp, FLAGS, description=__doc__)
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
