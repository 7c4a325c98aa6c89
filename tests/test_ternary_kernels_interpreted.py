"""ternary/kernels.py under Triton's interpreter on CPU: each kernel equals its PyTorch reference exactly.

Runs only with TRITON_INTERPRET=1 set before triton is first imported, which test_ternary_kernels.py does in a
fresh process; run by hand as `TRITON_INTERPRET=1 python -m pytest tests/test_ternary_kernels_interpreted.py`.
Inputs are fresh random tensors each run (the seed is in the failure message) and outputs are poisoned before
each call, so a kernel that skips an element cannot pass. Sizes are small and not multiples of the blocks.
"""
import os

import pytest
import torch

from ternary import quant
from ternary.pack import pack_codes
from ternary.layers import TernaryConv2d, TernaryLinear
from test_ternary import weights_at_half_scale

if os.environ.get('TRITON_INTERPRET') != '1':
    pytest.skip('needs TRITON_INTERPRET=1 from the start: test_ternary_kernels.py runs it', allow_module_level=True)


@pytest.fixture(scope='module')
def kernels():
    pytest.importorskip('triton')
    from ternary import kernels
    return kernels


def poisoned_outputs(w, per_channel):
    scale_shape = (w.shape[0] if per_channel else 1,) + (1,) * (w.dim() - 1)
    return (torch.full_like(w, 99, dtype=torch.int8), torch.full(scale_shape, float('nan')),
            torch.full_like(w, float('nan')))


def check_ternary_codes_kernel(kernels, w, per_channel, block=None, eps=1e-5, seed=None):
    out = poisoned_outputs(w, per_channel)
    codes, scale, w_q = kernels.ternary_codes_and_weight(w, per_channel, eps=eps, out=out, block=block)
    ref_codes, ref_scale = quant.weight_quant(w, per_channel, eps=eps)
    assert all(a is b for a, b in zip((codes, scale, w_q), out))
    assert torch.equal(codes, ref_codes), f'codes differ (seed {seed})'
    torch.testing.assert_close(scale, ref_scale, rtol=2 ** -23, atol=0, msg=f'scale differs (seed {seed})')
    assert torch.equal(w_q, quant.dequantize(codes, scale, w.dtype)), f'W_q differs (seed {seed})'


@pytest.mark.parametrize('shape', [(13, 7, 3, 3), (10, 37), (3, 1, 2, 2)])
@pytest.mark.parametrize('per_channel', [False, True])
@pytest.mark.parametrize('dtype', [torch.float32, torch.float16])
@pytest.mark.parametrize('block', [None, 128])  # 128: several blocks per row, a partial last block
def test_ternary_codes_kernel_matches_reference(kernels, shape, per_channel, dtype, block):
    seed = torch.seed()
    w = (torch.randn(shape) * torch.rand(shape[0], *[1] * (len(shape) - 1))).to(dtype)
    check_ternary_codes_kernel(kernels, w, per_channel, block, seed=seed)


def test_ternary_codes_kernel_rounds_ties_like_torch(kernels):
    w = torch.tensor([[4.0, 1.0], [-1.0, 2.0]])  # w / s = [2, 0.5, -0.5, 1]: the ±0.5 ties round to 0
    codes, scale, _ = kernels.ternary_codes_and_weight(w, eps=0.0)
    assert codes.tolist() == [[1, 0], [0, 1]] and scale.item() == 2.0
    check_ternary_codes_kernel(kernels, w, False, eps=0.0)


@pytest.mark.parametrize('per_channel', [False, True])
def test_ternary_codes_kernel_codes_at_and_one_ulp_around_half_the_scale(kernels, per_channel):
    """s/2 gives code 0 and one ulp more gives ±1, as in the reference."""
    w, expected = weights_at_half_scale(per_channel)
    assert torch.equal(kernels.ternary_codes_and_weight(w, per_channel)[0][:, :6], expected)
    check_ternary_codes_kernel(kernels, w, per_channel)


def test_ternary_codes_kernel_on_channels_last_weights(kernels):
    seed = torch.seed()
    w = torch.randn(6, 5, 3, 3).to(memory_format=torch.channels_last)
    for per_channel in (False, True):
        check_ternary_codes_kernel(kernels, w, per_channel, block=128, seed=seed)
        assert kernels.ternary_codes_and_weight(w, per_channel)[2].is_contiguous(memory_format=torch.channels_last)


def random_packed_problem(m, n, k, per_channel=True):
    x_q = torch.randint(-127, 128, (m, k), dtype=torch.int8)
    codes = torch.randint(-1, 2, (n, k), dtype=torch.int8)
    return x_q, torch.rand(m) + 0.01, pack_codes(codes), torch.rand(n if per_channel else 1) + 0.01


@pytest.mark.parametrize('m,n,k', [(37, 19, 150), (1, 70, 3), (65, 64, 257)])
def test_packed_matmul_kernel_matches_integer_reference(kernels, m, n, k):
    seed = torch.seed()
    for per_channel in (True, False):
        args = random_packed_problem(m, n, k, per_channel)
        out = torch.full((m, n), float('nan'))
        y = kernels.packed_matmul(*args, out=out)
        assert y is out and torch.equal(y, kernels.packed_matmul_reference(*args)), f'seed {seed}'


def rows_far_apart(rows, stride, fill):
    """rows [R, L] as a view `stride` elements apart, starting `stride % 4096` into a buffer whose head holds
    `fill`. The buffer spans gigabytes, but only the pages written are ever mapped."""
    start = stride % 4096
    try:
        buffer = torch.empty(start + stride * (rows.shape[0] - 1) + rows.shape[1], dtype=rows.dtype)
    except RuntimeError:
        pytest.skip('cannot reserve address space for a buffer past 2^31 elements')
    buffer[:start].fill_(fill)
    view = buffer.as_strided(rows.shape, (stride, 1), start)
    view.copy_(rows)
    return view


def test_packed_matmul_kernel_offsets_past_2_to_the_31(kernels):
    """Row 2 of x, w and y starts 2·(2^31 - 8) elements in. In int32 that offset wraps to -16, into the filler
    before row 0, so a kernel that wraps reads and writes the wrong elements (rather than crashing)."""
    m, n, k, stride = 3, 3, 40, 2 ** 31 - 8
    x_q, x_scale, packed, w_scale = random_packed_problem(m, n, k)
    x, w = rows_far_apart(x_q, stride, 5), rows_far_apart(packed, stride, 0x55)
    y = rows_far_apart(torch.full((m, n), float('nan')), stride, 7.0)
    kernels.packed_matmul_kernel[(1, 1)](x, x_scale, w, w_scale, y, m, n, k, packed.shape[1], x.stride(0),
                                         w.stride(0), y.stride(0), BLOCK_M=64, BLOCK_N=64, BLOCK_K4=32)
    assert torch.equal(y, kernels.packed_matmul_reference(x_q, x_scale, packed, w_scale))


def test_packed_matmul_reference_is_the_exact_integer_product(kernels):
    x_q, x_scale, packed, w_scale = random_packed_problem(9, 5, 21)
    codes = torch.stack([torch.tensor(row) for row in unpack_by_hand(packed, 21)])
    exact = (x_q.long() @ codes.long().T).float() * x_scale[:, None] * w_scale[None, :]
    assert torch.equal(kernels.packed_matmul_reference(x_q, x_scale, packed, w_scale), exact)


def unpack_by_hand(packed, k):
    """Unpacks by hand, byte by byte, following the documented layout (independent of unpack_codes)."""
    decode = {0: 0, 1: 1, 3: -1}
    return [[decode[(byte >> (2 * j)) & 3] for byte in row for j in range(4)][:k] for row in packed.tolist()]


def test_packed_linear_and_conv_match_the_float_layers(kernels):
    seed = torch.seed()
    linear = TernaryLinear(30, 7, act_bits=8).eval()
    x = torch.randn(2, 5, 30)
    codes, scale = quant.weight_quant(linear.weight)
    y = kernels.packed_linear(x, pack_codes(codes), scale.view(-1), linear.bias)
    assert torch.equal(y, kernels.packed_linear(x, pack_codes(codes), scale.view(-1), linear.bias,
                                                matmul=kernels.packed_matmul_reference)), f'seed {seed}'
    torch.testing.assert_close(y, linear(x), rtol=1e-4, atol=1e-5)
    conv = TernaryConv2d(3, 5, 3, stride=2, padding=1, per_channel=True, act_bits=8).eval()
    images = torch.randn(2, 3, 9, 7)
    codes, scale = quant.weight_quant(conv.weight, per_channel=True)
    args = (images, pack_codes(codes), scale.view(-1), 3, conv.bias, 2, 1)
    y = kernels.packed_conv2d(*args)
    assert torch.equal(y, kernels.packed_conv2d(*args, matmul=kernels.packed_matmul_reference)), f'seed {seed}'
    torch.testing.assert_close(y, conv(images), rtol=1e-4, atol=1e-5)
