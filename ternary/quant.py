"""BitNet b1.58 quantization: ternary weights, 8-bit activations, straight-through gradients.

Weights (absmean quantization of Ma et al. 2024, "The Era of 1-bit LLMs: All Large Language Models are in
1.58 Bits"), with one scale per tensor or per output channel (dim 0):

    γ     = mean(|W|)                              accumulated in float64, rounded to float32
    s     = γ + ε                                   ε = 1e-5 keeps an all-zero W finite
    codes = clamp(round(W / s), -1, 1)  ∈ {-1, 0, 1}, stored as int8; computed as sign(W) where |W| > s/2
    W_q   = s · codes                               what the convolution or matmul computes with

Activations (absmax quantization of BitNet, Wang et al. 2023, kept by b1.58), one scale per token: per row
of a linear layer's input, per sample of a conv's input (see act_quant):

    s_x = max(max|x|, ε) / Q                        Q = 2^(b-1) - 1 = 127 for b = 8 bits
    x_q = clamp(round(x / s_x), -Q, Q)              stored as int8;  x ≈ s_x · x_q

round() is torch.round, round half to even. Training keeps full-precision latent weights W and uses the
straight-through estimator (Bengio et al. 2013): the forward pass computes with W_q (and x_q), the backward
pass treats quantization as the identity, so dL/dW = dL/dW_q. The scale gets no gradient.

Everything here is a pure function of its inputs, runs on any device, and is the reference the Triton
kernels in kernels.py must reproduce bit for bit.
"""
import torch

from common.errors import UserError


def absmean(w, per_channel=False):
    """γ = mean|W| as float32, shape [C, 1, ..., 1] per output channel or [1, ..., 1] per tensor."""
    dims = tuple(range(1 if per_channel else 0, w.dim()))
    # float64 carries 29 more mantissa bits than float32, so summing in another order moves the total by far
    # less than a float32 ulp and the rounded γ almost never changes: a Triton reduction can match it exactly.
    total = w.detach().abs().double().sum(dim=dims, keepdim=True)
    return (total / (w.numel() // total.numel())).float()


def weight_quant(w, per_channel=False, eps=1e-5):
    """Returns (codes, scale): int8 codes in {-1, 0, 1} shaped like w, and the float32 scale s = γ + eps
    (broadcastable against w), so that W ≈ scale * codes."""
    scale = absmean(w, per_channel) + eps
    # clamp(round(W / s), -1, 1) with round half to even is 0 for |W| <= s/2 (round(±0.5) = 0), else sign(W).
    # Compared with the exact 0.5·s rather than divided: under torch.compile a division may become an
    # approximate one (on NVIDIA GPUs), and W / s within an ulp or two of ±0.5 would round the other way than in
    # the Triton kernel, which does the same comparison.
    w, half = w.detach().float(), 0.5 * scale
    codes = (w > half).to(torch.int8) - (w < -half).to(torch.int8)
    return codes, scale


def act_quant(x, bits=8, dims=(-1,), eps=1e-5):
    """Returns (values, scale): int8 values in [-Q, Q] and the float32 absmax scale over `dims`.

    dims=(-1,) gives one scale per row, the "per token" scale of a linear layer's input. A conv's input uses
    dims=(-3, -2, -1), one scale per sample: each conv output sums over a patch of pixels, and only a scale
    shared by the whole patch factors out of that sum, which the integer kernel in kernels.py needs."""
    if not 2 <= bits <= 8:
        raise UserError(f'activation bits must be 2..8 (int8 values), got {bits}')
    q = 2 ** (bits - 1) - 1
    scale = x.detach().abs().amax(dim=dims, keepdim=True).float().clamp_(min=eps) / q
    values = torch.round(x.detach().float() / scale).clamp_(-q, q).to(torch.int8)
    return values, scale


def dequantize(values, scale, dtype):
    return (values.float() * scale).to(dtype)


def fake_quant_weight(w, per_channel=False, eps=1e-5):
    """W_q = s · codes in w's dtype: what a ternary layer computes with."""
    codes, scale = weight_quant(w, per_channel, eps)
    return dequantize(codes, scale, w.dtype)


def fake_quant_act(x, bits=8, dims=(-1,)):
    values, scale = act_quant(x, bits, dims)
    return dequantize(values, scale, x.dtype)


def ste(latent, quantized):
    """Straight-through estimator: forward value `quantized`, gradient passed unchanged to `latent`.

    `latent - latent.detach()` is an exact zero that carries latent's gradient. The common form
    latent + (quantized - latent).detach() rounds twice and is only approximately `quantized`; this one is
    bit-exact, which the export round trip relies on. Both are plain tensor ops that Inductor fuses."""
    return quantized.detach() + (latent - latent.detach())
