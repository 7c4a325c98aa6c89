"""train_resnet18.py: the ResNet-18 baseline, outside the ladder, tuned for time to 94%.
CIFAR stem (3x3 stride-1 conv, no max-pool), Nesterov SGD, flip + translate 4 + cutout 12, six-view TTA.
Timed (CUDA events): training steps with their augmentation, final TTA eval. Not timed: data load to the
device, per-epoch eval, printing, cudnn autotuning (paid by the untimed warm-up run).
Run: python train_resnet18.py --runs 5
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
from common.flags import Flags, one_of, parse_flags
from common.errors import UserError
from common.precision import autocast, input_dtype, onednn_below_avx512
from common.table import (Timer, check_finite_loss, peak_memory_bytes, print_table_header, print_table_row,
                          reset_peak_memory)

torch.backends.cudnn.benchmark = True

hyp = {
    'opt': {
        'epochs': 26.0,             # passes over the training set; a fraction ends mid-epoch
        'batch_size': 500,          # images per step
        'lr': 0.2,                  # peak lr of PyTorch SGD on the batch-mean loss
        'momentum': 0.9,            # Nesterov
        'weight_decay': 5e-4,       # PyTorch SGD's (coupled) L2 coefficient
        'label_smoothing': 0.0,
        'warmup_frac': 0.2,         # share of steps spent rising from lr_start to the peak
        'lr_start': 0.2,            # lr multiplier at step 0
        'lr_end': 0.0,              # lr multiplier at the last step
    },
    'aug': {
        'flip': 'random',           # 'none', 'random' or 'alternating' (airbench/augment.py)
        'translate': 4,             # pixels, reflect-padded
        'cutout': 12,               # side of the zeroed square, pixels
    },
    'net': {
        'width': 64,                # channels of the stem and first stage; doubled at each later stage
        'tta_level': 2,             # 0: plain, 1: with mirror, 2: six views (as main6_tta.py)
        'dtype': 'auto',            # 'auto', 'fp32' or 'bf16' (common/precision.py); no fp16: see make_net
    },
}

# The run flags each package declares (its flags.py): --runs, --ternary, --data-dir, ...
FLAGS = (stats.FLAGS, ternary.FLAGS, airbench.FLAGS,
         Flags('this script', ranges={'dtype': one_of('auto', 'fp32', 'bf16')}))

#############################################
#            Network Components             #
#############################################

class BasicBlock(nn.Module):
    """Two 3x3 convs with a shortcut; a 1x1 conv on the shortcut where the shape changes (He et al. 2016)."""

    def __init__(self, channels_in, channels_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels_out, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.BatchNorm2d(channels_out)
        self.conv2 = nn.Conv2d(channels_out, channels_out, 3, padding=1, bias=False)
        self.norm2 = nn.BatchNorm2d(channels_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or channels_in != channels_out:
            self.shortcut = nn.Sequential(nn.Conv2d(channels_in, channels_out, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(channels_out))

    def forward(self, x):
        out = F.relu(self.norm1(self.conv1(x)))
        return F.relu(self.norm2(self.conv2(out)) + self.shortcut(x))

#############################################
#            Network Definition             #
#############################################

class ResNet18(nn.Module):
    def __init__(self, width):
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.stem = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.stem_norm = nn.BatchNorm2d(width)
        stages, channels_in = [], width
        for i, channels_out in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages += [BasicBlock(channels_in, channels_out, stride), BasicBlock(channels_out, channels_out, 1)]
            channels_in = channels_out
        self.layers = nn.Sequential(*stages)
        self.head = nn.Linear(widths[-1], 10)

    def forward(self, x):
        x = F.relu(self.stem_norm(self.stem(x)))
        x = self.layers(x)
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))


def make_net(net, device):
    """fp32 weights in channels_last; with dtype bf16 (auto on CUDA) the forward runs in bf16 autocast (main()).
    No fp16 weights, as the rungs (and airbench) have: this recipe's decay step alone, lr * weight_decay =
    1e-4 of a weight, is below half an fp16 ulp (2^-11), so fp16 weights would lose the decay to rounding."""
    if device == 'cpu' and net['width'] < 8 and onednn_below_avx512():
        # The shortcuts' 1x1 stride-2 convs: oneDNN's AVX2 weight-gradient kernel for them, in channels_last with
        # fewer than 8 input channels, writes past its workspace (uxlfoundation/oneDNN#6035): a segfault, a hang
        # or wrong gradients. `ONEDNN_MAX_CPU_ISA=AVX2 python train_resnet18.py --width 4` showed all three.
        raise UserError(f"--width {net['width']}: on this CPU oneDNN runs AVX2 kernels, and its AVX2 1x1 "
                        'stride-2 conv corrupts memory below 8 channels (uxlfoundation/oneDNN#6035): use --width 8 '
                        'or more')
    return ResNet18(net['width']).to(device).to(memory_format=torch.channels_last)

#############################################
#              Initialization               #
#############################################

def reinit_net(model):
    for module in model.modules():
        if isinstance(module, (nn.Conv2d, nn.BatchNorm2d, nn.Linear)):
            module.reset_parameters()

#############################################
#             Optimizer Extras              #
#############################################

def make_optimizer(model, total_steps, opt):
    optimizer = torch.optim.SGD(model.parameters(), lr=opt['lr'], momentum=opt['momentum'], nesterov=True,
                                weight_decay=opt['weight_decay'])
    schedule = lr_schedule(total_steps, opt['warmup_frac'], opt['lr_start'], opt['lr_end'])
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def lr_schedule(total_steps, warmup_frac, lr_start, lr_end):
    """Linear rise from lr_start to 1 over the warm-up share of the steps, then linear decay to lr_end."""
    warmup_steps = max(1, int(warmup_frac * total_steps))  # floor, as airbench

    def multiplier(step):
        if step < warmup_steps:
            return lr_start + (1 - lr_start) * step / warmup_steps
        return 1 + (lr_end - 1) * (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return multiplier

#############################################
#                  Logging                  #
#############################################

def epoch_row(run, epoch, loss, outputs, labels, timer):
    train_acc = (outputs.argmax(1) == labels).float().mean().item()
    train_loss = check_finite_loss(run, epoch, loss.item())  # a diverged run stops, unlogged
    return dict(run=run, epoch=epoch, train_loss=train_loss, train_acc=train_acc, time_seconds=timer.seconds)

#############################################
#                Evaluation                 #
#############################################

def infer_views(model, inputs, tta_level):
    if tta_level == 0:
        return model(inputs).float().clone()  # kept while the next batch runs: a CUDA graph's replay overwrites it
    if tta_level == 1:
        return 0.5 * model(inputs).float() + 0.5 * model(inputs.flip(-1)).float()  # read before the next call
    padded = F.pad(inputs, (1, 1, 1, 1), mode='reflect')
    shifted = [padded[..., :-2, :-2], padded[..., 2:, 2:]]
    return 0.5 * infer_views(model, inputs, 1) + 0.25 * sum(infer_views(model, x, 1) for x in shifted)


def evaluate(model, loader, dtype, tta_level=0):
    """Test accuracy; with tta_level > 0 the logits of several views of each image are averaged."""
    model.eval()
    with torch.no_grad(), autocast(loader.device.type, dtype):
        images = loader.normalize(loader.images)  # timed in the final eval, as in airbench
        logits = torch.cat([infer_views(model, batch, tta_level) for batch in images.split(1000)])
    if not logits.isfinite().all():  # diverged after the last loss it checked: no accuracy (stats.Trial refuses it)
        return math.nan
    return (logits.argmax(1) == loader.labels).sum().item() / len(loader.labels)  # exact: 9,400 of 10,000 is 0.94

#############################################
#                 Training                  #
#############################################

def cross_entropy_loss(label_smoothing):
    """Cross-entropy per example against labels smoothed by `label_smoothing`, as airbench94; main() averages it.
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
    reinit_net(model)
    optimizer, scheduler = make_optimizer(model, total_steps, hyp['opt'])
    step = 0
    for epoch in range(math.ceil(epochs)):
        model.train()
        with timer:
            for inputs, labels in train_loader:
                with autocast(device, hyp['net']['dtype']):  # per step: autocast keeps its weight copies per region
                    outputs = model(inputs)
                    loss = loss_fn(outputs, labels, inputs).mean()  # autocast computes the loss in fp32
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
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
    return dict(run=run, seed=seed, epochs=epochs, val_acc=val_acc, tta_val_acc=tta_val_acc,
                time_seconds=timer.seconds, peak_memory_bytes=peak_memory_bytes(device))

#############################################
#                  Session                  #
#############################################

def prepare(hyp, args):
    """What the runs of one invocation share: the model (main() reinitializes it), the loss and the loaders.
    The warm-up loader has random labels: its run only pays for cudnn autotuning."""
    model = ternary.convert_from_flags(make_net(hyp['net'], args.device), args)  # [ternary] no-op by default
    loss_fn = cross_entropy_loss(hyp['opt']['label_smoothing'])
    loss_fn = ternary.distill_from_flags(loss_fn, partial(make_net, hyp['net']), args)  # [ternary] --teacher
    data = load_data(args)
    aug, batch_size = hyp['aug'], hyp['opt']['batch_size']
    augment = dict(train=True, flip=aug['flip'], translate=aug['translate'], cutout=aug['cutout'])
    batches = input_dtype(hyp['net']['dtype'])  # fp32: autocast casts at each conv
    train_loader = CifarLoader(*data['train'], batch_size, args.device, dtype=batches, **augment)
    warmup_loader = train_loader.with_labels(torch.randint_like(train_loader.labels, 10))  # shares the images
    test_loader = CifarLoader(*data['test'], 1000, args.device, dtype=batches)
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
