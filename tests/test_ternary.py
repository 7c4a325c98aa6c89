"""ternary/quant.py and ternary/layers.py: the quantizer maths, the drop-in layers, convert and the flags."""
import argparse
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.errors import UserError
import ternary
from ternary import quant
from ternary.export import convert_from_flags, model_size_bytes
from ternary.layers import TernaryConv2d, TernaryLayer, TernaryLinear, convert, triton_kernels


class DiracConv(nn.Conv2d):
    """A rung-style subclass whose reset_parameters adds its own init."""
    def reset_parameters(self):
        super().reset_parameters()
        nn.init.dirac_(self.weight.data[:self.weight.shape[1]])


def make_net(device='cpu'):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
                         DiracConv(8, 16, 3, padding='same', bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                         nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(16, 2, bias=False)).to(device)


def flags(**overrides):
    args = dict(ternary=True, ternary_acts=0, ternary_per_channel=False, ternary_keep_first=True,
                ternary_keep_last=False)
    return argparse.Namespace(**{**args, **overrides})


def test_absmean_scale_and_codes_hand_example():
    w = torch.tensor([[4.0, 1.0], [-1.0, 2.0]])  # mean |w| = 8 / 4 = 2, so w / s = [2, 0.5, -0.5, 1]
    codes, scale = quant.weight_quant(w, eps=0)
    assert scale.item() == 2.0
    assert codes.tolist() == [[1, 0], [0, 1]]  # round half to even: ±0.5 -> 0; 2 clamps to 1
    assert quant.weight_quant(w)[1].item() == pytest.approx(2.0 + 1e-5)


def weights_at_half_scale(per_channel, seed=0, rows=3, n=40):
    """(w, expected codes of its first six columns): random rows that start with s/2, one float32 ulp above
    and below it, and their negatives, where s is the scale weight_quant finds for w itself. Those entries
    move s, so they are set again until s stops moving (a few rounds: they are 6 of the n entries s averages)."""
    w = torch.randn(rows, n, generator=torch.Generator().manual_seed(seed)) * torch.arange(1, rows + 1)[:, None]
    for _ in range(20):
        half = (0.5 * quant.weight_quant(w, per_channel)[1]).expand(rows, 1)
        up, down = torch.nextafter(half, half + 1), torch.nextafter(half, torch.zeros(()))
        probes = torch.cat([half, up, down, -half, -up, -down], dim=1)
        if torch.equal(w[:, :6], probes):
            return w, torch.tensor([0, 1, 0, 0, -1, 0], dtype=torch.int8).expand(rows, 6)
        w[:, :6] = probes
    raise AssertionError('the scale did not settle: try another seed')


@pytest.mark.parametrize('per_channel', [False, True])
def test_codes_round_half_to_even_at_and_one_ulp_around_half_the_scale(per_channel):
    w, expected = weights_at_half_scale(per_channel)  # |W| = s/2 is round(±0.5) = 0; one ulp more is ±1
    assert torch.equal(quant.weight_quant(w, per_channel)[0][:, :6], expected)


class Float32DivisionSpy(torch.overrides.TorchFunctionMode):
    """Records the float32 divisions computed under it."""
    def __init__(self):
        super().__init__()
        self.divisions = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if 'div' in func.__name__ and any(isinstance(a, torch.Tensor) and a.dtype == torch.float32 for a in args):
            self.divisions.append(func.__name__)
        return func(*args, **(kwargs or {}))


def test_weight_codes_need_no_float32_division():
    """W / s is correctly rounded on the CPU, and then equivalent to comparing |W| with s/2; but Inductor's
    division on NVIDIA GPUs is approximate (2 ulp), so a compiled model would round W near ±s/2 unlike the
    Triton kernel and the packed file. (absmean's float64 division is exact on GPUs too.)"""
    with Float32DivisionSpy() as spy:
        quant.weight_quant(torch.randn(4, 3, 3, 3), per_channel=True)
    assert spy.divisions == []


def test_codes_are_ternary_int8_and_scale_is_float32_for_half_weights():
    w = torch.randn(32, 9, 3, 3).half()
    codes, scale = quant.weight_quant(w)
    assert codes.dtype == torch.int8 and set(codes.unique().tolist()) == {-1, 0, 1}
    assert scale.dtype == torch.float32
    assert scale.item() == pytest.approx(w.float().abs().mean().item() + 1e-5, rel=1e-6)


def test_per_channel_scales_are_each_channels_absmean():
    w = torch.randn(5, 4, 3, 3) * torch.arange(1, 6).view(5, 1, 1, 1)
    codes, scale = quant.weight_quant(w, per_channel=True)
    assert scale.shape == (5, 1, 1, 1)
    expected = w.abs().mean(dim=(1, 2, 3)) + 1e-5
    torch.testing.assert_close(scale.view(-1), expected)
    torch.testing.assert_close(codes, torch.round(w / expected.view(5, 1, 1, 1)).clamp(-1, 1).to(torch.int8))


def test_act_quant_absmax_per_row_and_per_sample():
    x = torch.randn(6, 10)
    values, scale = quant.act_quant(x)
    assert values.dtype == torch.int8 and scale.shape == (6, 1)
    torch.testing.assert_close(scale.view(-1), x.abs().amax(dim=1) / 127)
    assert (values.abs().amax(dim=1) == 127).all()  # the largest entry of each row maps to ±127
    images = torch.randn(3, 4, 5, 5)
    _, scale = quant.act_quant(images, dims=(-3, -2, -1))
    assert scale.shape == (3, 1, 1, 1)
    torch.testing.assert_close(quant.dequantize(*quant.act_quant(images, dims=(-3, -2, -1)), torch.float32),
                               images, atol=scale.max().item() / 2, rtol=0)


def test_ste_forward_is_exactly_quantized_and_gradient_is_identity():
    w = torch.randn(8, 3, 3, 3, requires_grad=True)
    w_q = quant.fake_quant_weight(w)
    out = quant.ste(w, w_q)
    assert torch.equal(out, w_q)
    upstream = torch.randn_like(w)
    out.backward(upstream)
    assert torch.equal(w.grad, upstream)


def test_ternary_layer_gradient_equals_latent_gradient():
    layer = TernaryLinear(7, 3, bias=False)
    x = torch.randn(5, 7)
    layer(x).square().sum().backward()
    w_q = quant.fake_quant_weight(layer.weight.detach()).requires_grad_()
    F.linear(x, w_q).square().sum().backward()
    assert torch.equal(layer.weight.grad, w_q.grad)


def test_layers_compute_with_quantized_weights_and_activations():
    conv = TernaryConv2d(4, 6, 3, padding=1, per_channel=True, act_bits=8)
    x = torch.randn(2, 4, 7, 7)
    expected = F.conv2d(quant.fake_quant_act(x, 8, (-3, -2, -1)), quant.fake_quant_weight(conv.weight, True),
                        conv.bias, padding=1)
    assert torch.equal(conv(x), expected)
    linear = TernaryLinear(9, 4)
    y = torch.randn(3, 9)
    assert torch.equal(linear(y), F.linear(y, quant.fake_quant_weight(linear.weight), linear.bias))


def test_importing_ternary_does_no_work_and_leaves_triton_unimported():
    code = "import sys, ternary; assert 'triton' not in sys.modules and 'ternary.kernels' not in sys.modules"
    subprocess.run([sys.executable, '-c', code], check=True, cwd=Path(__file__).parents[1])


def test_layers_work_without_triton(monkeypatch):
    monkeypatch.setitem(sys.modules, 'triton', None)  # makes `import triton` raise ImportError
    monkeypatch.delitem(sys.modules, 'ternary.kernels', raising=False)
    monkeypatch.delattr(ternary, 'kernels', raising=False)
    triton_kernels.cache_clear()
    try:
        assert triton_kernels() is None
        layer = TernaryLinear(4, 3, act_bits=8)
        layer(torch.randn(2, 4)).sum().backward()
        assert layer.weight.grad is not None
    finally:
        triton_kernels.cache_clear()


def test_ternary_layers_keep_state_dict_keys_and_reset_parameters():
    torch.manual_seed(1)
    plain = nn.Conv2d(3, 4, 3, bias=True)
    torch.manual_seed(1)
    ternary = TernaryConv2d(3, 4, 3, bias=True)
    assert list(ternary.state_dict()) == list(plain.state_dict())
    assert torch.equal(ternary.weight, plain.weight)
    before = ternary.weight.detach().clone()
    ternary.reset_parameters()
    assert not torch.equal(ternary.weight, before)


def test_convert_keeps_parameters_names_and_subclass_init():
    model = make_net()
    weights = {name: p for name, p in model.named_parameters()}
    keys = list(model.state_dict())
    convert(model, keep=('0',))
    assert type(model[0]) is nn.Conv2d
    assert isinstance(model[3], TernaryConv2d) and isinstance(model[3], DiracConv)
    assert isinstance(model[8], TernaryLinear)
    assert list(model.state_dict()) == keys
    assert all(p is weights[name] for name, p in model.named_parameters())
    model[3].weight.data.zero_()  # what a rung's init code does: it must reach the same tensor
    assert weights['3.weight'].abs().sum() == 0
    model[3].reset_parameters()  # DiracConv's own init still runs
    assert torch.equal(model[3].weight[:8, :, 1, 1], torch.eye(8))


def test_convert_rejects_unknown_keep_names_and_custom_forward():
    with pytest.raises(UserError, match='whiten'):
        convert(make_net(), keep=('whiten',))

    class Scaled(nn.Linear):
        def forward(self, x):
            return 2 * super().forward(x)
    with pytest.raises(UserError, match='forward'):
        convert(nn.Sequential(Scaled(3, 3)))


@pytest.mark.parametrize('keep_first,keep_last,full', [(True, False, ['0']), (False, True, ['8']),
                                                       (True, True, ['0', '8']), (False, False, [])])
def test_convert_from_flags_keeps_first_and_last_layers(keep_first, keep_last, full, capsys):
    model = convert_from_flags(make_net(), flags(ternary_keep_first=keep_first, ternary_keep_last=keep_last,
                                                 ternary_acts=8, ternary_per_channel=True))
    layers = {name: m for name, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    assert [name for name, m in layers.items() if not isinstance(m, TernaryLayer)] == full
    assert all(m.act_bits == 8 and m.per_channel for m in layers.values() if isinstance(m, TernaryLayer))
    layer_line, size_line = capsys.readouterr().out.splitlines()
    assert layer_line.endswith('full precision: ' + (', '.join(full) or 'none'))
    assert size_line == (f'model size: {model_size_bytes(model):,} bytes as trained, '
                         f'{model_size_bytes(model, packed=True):,} bytes packed (ternary.export_packed)')


def test_convert_from_flags_is_a_no_op_without_ternary(capsys):
    model = make_net()
    assert convert_from_flags(model, flags(ternary=False)) is model
    assert not any(isinstance(m, TernaryLayer) for m in model.modules())
    assert capsys.readouterr().out == ''
    with pytest.raises(UserError, match='activation bits'):
        convert_from_flags(make_net(), flags(ternary_acts=9))


def test_tiny_ternary_model_learns_separable_data():
    torch.manual_seed(0)
    labels = torch.randint(0, 2, (256,))
    images = torch.randn(256, 3, 8, 8) + 1.5 * (2 * labels - 1).view(-1, 1, 1, 1) * torch.randn(1, 3, 8, 8)
    model = convert(make_net(), act_bits=8)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for step in range(30):
        batch = torch.randint(0, 256, (64,))
        loss = F.cross_entropy(model(images[batch]), labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
