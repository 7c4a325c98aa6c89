"""Ternary drop-in layers and `convert`, which swaps them into a model in place.

TernaryConv2d and TernaryLinear are nn.Conv2d and nn.Linear with a quantizing forward (quant.py): they hold
the same full-precision latent `weight` Parameter, have the same state_dict keys and the same
reset_parameters(), so optimizers, init code and checkpoints written for the full-precision model still work.
`convert` changes the class of existing modules rather than building new ones: the Parameter objects, their
device and dtype, and every reference to the module stay as they were.

On CUDA in eager mode the weight quantization runs as one Triton kernel pair (kernels.py); under
torch.compile, and without Triton, it is the PyTorch reference, which Inductor fuses on its own.

convert_from_flags, the --ternary toggle, lives in export.py: it also reports the packed model size.
"""
import functools

import torch
import torch.nn as nn

from common.errors import UserError
from ternary import quant


@functools.cache
def triton_kernels():
    """The kernels module, or None where Triton is not installed (imported on first use: Triton is optional)."""
    try:
        from ternary import kernels
    except ImportError:
        return None
    return kernels


def forward_weight(w, per_channel):
    """W_q as the forward pass computes it: quant.fake_quant_weight, or its Triton twin on CUDA in eager mode.
    Under torch.compile the reference is the better choice: Inductor fuses it with the surrounding ops into
    kernels of its own, where a hand-written launch would be an opaque call in the graph."""
    if w.is_cuda and not torch.compiler.is_compiling() and triton_kernels() is not None:
        return triton_kernels().ternary_codes_and_weight(w, per_channel)[2]
    return quant.fake_quant_weight(w, per_channel)


def export_codes(w, per_channel):
    """(codes, scale) for export, computed the way the forward pass computes them on w's device."""
    if w.is_cuda and triton_kernels() is not None:
        return triton_kernels().ternary_codes_and_weight(w, per_channel)[:2]
    return quant.weight_quant(w, per_channel)


class TernaryLayer:
    """What TernaryConv2d and TernaryLinear add to their base class.

    frozen_weight: W_q loaded from a packed file (export.load_packed, through `freeze`). When set, the layer
    computes with it instead of quantizing `weight`, because re-quantizing W_q would give a different absmean
    scale (mean|s·codes| != s); frozen_codes and frozen_scale are the codes and scale it was made of, which a
    re-export writes unchanged. All three are non-persistent buffers (not in the state_dict), and
    reset_parameters() clears them."""
    act_dims = (-1,)
    frozen_buffers = ('frozen_weight', 'frozen_codes', 'frozen_scale')

    def setup_ternary(self, per_channel=False, act_bits=0):
        check_act_bits(act_bits)
        self.per_channel, self.act_bits = per_channel, act_bits
        for name in self.frozen_buffers:
            self.register_buffer(name, None, persistent=False)

    def reset_parameters(self):
        super().reset_parameters()
        # nn.Conv2d.__init__ calls this before setup_ternary has registered the buffers
        if getattr(self, 'frozen_weight', None) is not None:
            for name in self.frozen_buffers:
                setattr(self, name, None)

    def freeze(self, codes, scale):
        """Computes with W_q = scale · codes from now on, in the weight's dtype, device and memory format
        (empty_like keeps channels_last, which the rung's convolutions run in)."""
        device = self.weight.device
        self.frozen_codes, self.frozen_scale = codes.to(device), scale.to(device)
        self.frozen_weight = torch.empty_like(self.weight, requires_grad=False).copy_(
            quant.dequantize(self.frozen_codes, self.frozen_scale, self.weight.dtype))

    def ternary_weight(self):
        if self.frozen_weight is not None:
            return self.frozen_weight
        return quant.ste(self.weight, forward_weight(self.weight, self.per_channel))

    def ternary_input(self, x):
        if not self.act_bits:
            return x
        return quant.ste(x, quant.fake_quant_act(x, self.act_bits, self.act_dims))

    def extra_repr(self):
        return super().extra_repr() + f', per_channel={self.per_channel}, act_bits={self.act_bits}'


class TernaryConv2d(TernaryLayer, nn.Conv2d):
    act_dims = (-3, -2, -1)  # one activation scale per sample, see quant.act_quant

    def __init__(self, *args, per_channel=False, act_bits=0, **kwargs):
        super().__init__(*args, **kwargs)
        self.setup_ternary(per_channel, act_bits)

    def forward(self, x):
        return self._conv_forward(self.ternary_input(x), self.ternary_weight(), self.bias)


class TernaryLinear(TernaryLayer, nn.Linear):
    def __init__(self, *args, per_channel=False, act_bits=0, **kwargs):
        super().__init__(*args, **kwargs)
        self.setup_ternary(per_channel, act_bits)

    def forward(self, x):
        return nn.functional.linear(self.ternary_input(x), self.ternary_weight(), self.bias)


@functools.cache
def ternary_class(base):
    """The ternary class for a module of class `base`. A rung's own subclass of nn.Conv2d (say, one whose
    reset_parameters does a dirac init) gets a class deriving from both, so its methods stay in effect."""
    root = TernaryConv2d if issubclass(base, nn.Conv2d) else TernaryLinear
    if base in (nn.Conv2d, nn.Linear):
        return root
    return type('Ternary' + base.__name__, (root, base), {'__module__': base.__module__})


def check_act_bits(act_bits):
    if act_bits != 0 and not 2 <= act_bits <= 8:
        raise UserError(f'ternary activation bits must be 0 (off) or 2..8, got {act_bits}')


def check_convertible(module, name, act_bits):
    check_act_bits(act_bits)
    if type(module).forward not in (nn.Conv2d.forward, nn.Linear.forward):
        raise UserError(f"layer '{name}' ({type(module).__name__}) has its own forward(), which a ternary layer "
                        f"would replace: keep it full precision or drop the override")


def make_ternary(module, name, per_channel=False, act_bits=0):
    check_convertible(module, name, act_bits)
    module.__class__ = ternary_class(type(module))
    module.setup_ternary(per_channel, act_bits)


def is_quantizable(module):
    return isinstance(module, (nn.Conv2d, nn.Linear))


def quantizable_names(model):
    """Names of the convs and linears in named_modules() order, i.e. forward order in a rung's model."""
    return [name for name, module in model.named_modules() if is_quantizable(module)]


def convert(model, keep=(), per_channel=False, act_bits=0):
    """Makes every nn.Conv2d / nn.Linear of `model` ternary in place, except those named in `keep`.
    Layers that are already ternary are left as they are. Returns the model."""
    names = quantizable_names(model)
    unknown = [name for name in keep if name not in names]
    if unknown:
        raise UserError(f'cannot keep {unknown} in full precision: the convs and linears are {names}')
    targets = [(name, module) for name, module in model.named_modules()
               if is_quantizable(module) and name not in keep and not isinstance(module, TernaryLayer)]
    for name, module in targets:  # check all first, so that an error leaves the model as it was
        check_convertible(module, name, act_bits)
    for name, module in targets:
        make_ternary(module, name, per_channel, act_bits)
    return model


def describe(model):
    """One line naming the ternary layers, their options, and the convs and linears kept in full precision."""
    ternary = [n for n, m in model.named_modules() if isinstance(m, TernaryLayer)]
    full = [n for n, m in model.named_modules() if is_quantizable(m) and not isinstance(m, TernaryLayer)]
    options = {(m.per_channel, m.act_bits) for m in model.modules() if isinstance(m, TernaryLayer)}
    scales = ', '.join(f"{'per-channel' if pc else 'per-tensor'} scales, "
                       f"{f'{bits}-bit' if bits else 'full-precision'} activations" for pc, bits in sorted(options))
    return f"ternary ({scales}): {', '.join(ternary) or 'none'}; full precision: {', '.join(full) or 'none'}"
