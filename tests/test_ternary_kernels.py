"""ternary/kernels.py: the interpreted kernel tests (run in a fresh process) and, with a GPU, compiled ones.

Triton's interpreter needs TRITON_INTERPRET=1 before triton is first imported (triton.language's own helpers,
like tl.sum, are decorated at import). In this pytest process something may have imported triton already
(torch.compile does), and setting the variable here would change other tests, so the interpreted tests in
test_ternary_kernels_interpreted.py run in a child process that has it from the start.
"""
import importlib.util
import os
import subprocess
import sys

import pytest
import torch

from ternary import quant
from ternary.pack import pack_codes
from ternary.layers import TernaryConv2d
from test_ternary import weights_at_half_scale

HERE = os.path.dirname(os.path.abspath(__file__))
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason='needs a CUDA GPU')


@pytest.mark.skipif(importlib.util.find_spec('triton') is None, reason='needs triton')
def test_kernels_match_references_under_interpreter():
    env = {**os.environ, 'TRITON_INTERPRET': '1'}
    script = os.path.join(HERE, 'test_ternary_kernels_interpreted.py')
    result = subprocess.run([sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', script],
                            cwd=os.path.dirname(HERE), env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0 and ' passed' in result.stdout, result.stdout[-6000:] + result.stderr[-2000:]


def random_packed_problem(m, n, k):
    x_q = torch.randint(-127, 128, (m, k), dtype=torch.int8)
    codes = torch.randint(-1, 2, (n, k), dtype=torch.int8)
    return x_q, torch.rand(m) + 0.01, pack_codes(codes), torch.rand(n) + 0.01


@cuda
def test_compiled_kernels_match_references_on_cuda():
    from ternary import kernels
    for shape in [(64, 24, 3, 3), (256, 256, 3, 3), (10, 256)]:
        w = torch.randn(shape, device='cuda', dtype=torch.half)
        for per_channel in (False, True):
            codes, scale, w_q = kernels.ternary_codes_and_weight(w, per_channel)
            assert torch.equal(codes, quant.weight_quant(w, per_channel)[0])
            assert torch.equal(w_q, quant.dequantize(codes, scale, w.dtype))
    args = [t.cuda() for t in random_packed_problem(1000, 77, 2304)]
    assert torch.equal(kernels.packed_matmul(*args), kernels.packed_matmul_reference(*args))


@cuda
def test_ternary_layer_on_cuda_quantizes_like_the_reference():
    conv = TernaryConv2d(16, 32, 3, padding=1).cuda().half().to(memory_format=torch.channels_last)
    w_q = conv.ternary_weight()  # the Triton kernel's W_q, through the straight-through estimator
    assert torch.equal(w_q, quant.fake_quant_weight(conv.weight))
    x = torch.randn(4, 16, 8, 8, device='cuda', dtype=torch.half)
    torch.testing.assert_close(conv(x), torch.nn.functional.conv2d(x, w_q.detach(), padding=1))


@cuda
def test_compiled_reference_codes_match_the_kernel_near_half_the_scale():
    """Inductor's float32 division is approximate on NVIDIA GPUs (2 ulp): codes of a compiled model must not
    come from one, or W within an ulp or two of ±s/2 would get other codes than the kernel and the file."""
    from ternary import kernels
    w, expected = weights_at_half_scale(per_channel=True, rows=256)
    w = w.cuda()
    codes = torch.compile(quant.weight_quant)(w, True)[0]
    assert torch.equal(codes[:, :6].cpu(), expected)
    assert torch.equal(codes, kernels.ternary_codes_and_weight(w, True)[0])
