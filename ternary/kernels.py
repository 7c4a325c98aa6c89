"""Triton kernels for ternary layers, each beside the PyTorch reference it must match exactly.

1. Weight quantization, every training step: γ = mean|W|, s = γ + ε, codes = clamp(round(W / s), -1, 1)
   (computed as sign(W) where |W| > s/2, without a division) and W_q = s·codes, as quant.weight_quant and
   quant.fake_quant_weight compute them. The scale needs a reduction over a whole tensor (or output channel)
   before any element can be quantized, and Triton has no grid-wide barrier, so it takes two launches:
   `absmean_partials` sums |W| over blocks of one row in float64, then `ternarize` has every program re-sum
   its row's few partial sums in one fixed order (so all programs agree on s without a third launch) and
   quantizes its block. Reading W twice costs less than a single program per row would on a [256, 256, 3, 3]
   tensor quantized per tensor (one row of 589,824 elements).
2. Packed inference: y = (x_q @ codes^T) · s_x · s_w with int8 activations x_q [M, K] and 2-bit packed
   ternary weights [N, ceil(K / 4)] (layout in pack.py), unpacked in registers, multiplied on int8 tensor
   cores with int32 accumulation. Convolutions go through the same kernel via im2col (F.unfold).

Exactness. The integer sums are exact in both kernel and reference (float64 there: |Σ| <= 127·K < 2^53), and
the float epilogue is the same sequence of correctly rounded float32 operations, so outputs are equal bit for
bit. For the weights, the codes come from comparisons with s/2 (exact, where a division may be approximate
on NVIDIA GPUs, in Triton and in Inductor's code alike), and the float64 absmean rounds to the same float32
in any summation order except in the rare case where the float64 sum lands within rounding of a float32 tie.

Offsets. Element offsets are computed in int64: program ids, aranges and strides that fit are int32, and a
row index times a row stride passes 2^31 on large inputs (an im2col of a 1024-image batch, say).

Needs Triton; layers.py imports this module on first use on CUDA and falls back to quant.py without it.
"""
import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from common.errors import UserError
from ternary.pack import unpack_codes
from ternary.quant import act_quant


@triton.jit
def absmean_partials(w_ptr, partial_ptr, row_len, n_blocks, BLOCK: tl.constexpr):
    row, block = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    offsets = block * BLOCK + tl.arange(0, BLOCK)
    w = tl.load(w_ptr + row * row_len + offsets, mask=offsets < row_len, other=0.0)
    tl.store(partial_ptr + row * n_blocks + block, tl.sum(tl.abs(w.to(tl.float64)), axis=0))


@triton.jit
def ternarize(w_ptr, partial_ptr, codes_ptr, w_q_ptr, scale_ptr, row_len, n_blocks, eps,
              BLOCK: tl.constexpr, BLOCKS_POW2: tl.constexpr):
    row, block = tl.program_id(0).to(tl.int64), tl.program_id(1).to(tl.int64)
    p = tl.arange(0, BLOCKS_POW2)
    partials = tl.load(partial_ptr + row * n_blocks + p, mask=p < n_blocks, other=0.0)
    scale = (tl.sum(partials, axis=0) / row_len).to(tl.float32) + eps
    offsets = block * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < row_len
    w = tl.load(w_ptr + row * row_len + offsets, mask=mask, other=0.0).to(tl.float32)
    # clamp(round(w / s), -1, 1) with round half to even is 0 for |w| <= s/2 (round(±0.5) = 0), else sign(w);
    # 0.5·s is exact, so this needs no division (quant.weight_quant does the same)
    half = 0.5 * scale
    codes = (w > half).to(tl.int8) - (w < -half).to(tl.int8)
    tl.store(codes_ptr + row * row_len + offsets, codes, mask=mask)
    tl.store(w_q_ptr + row * row_len + offsets, (codes.to(tl.float32) * scale).to(w_q_ptr.dtype.element_ty),
             mask=mask)
    if block == 0:
        tl.store(scale_ptr + row, scale)


def dense_rows(w):
    """w itself if each output channel is one contiguous run of memory (true for contiguous and for
    channels_last weights), else a contiguous copy. The kernels index memory, not logical positions."""
    if w.is_contiguous() or (w.dim() == 4 and w.is_contiguous(memory_format=torch.channels_last)):
        return w
    return w.contiguous()


def ternary_codes_and_weight(w, per_channel=False, eps=1e-5, out=None, block=None):
    """(codes, scale, w_q) as quant.weight_quant and quant.fake_quant_weight give them, from two launches.
    `out` takes preallocated (codes, scale, w_q); `block` overrides the block size (tests use small ones)."""
    w = dense_rows(w.detach())
    rows = w.shape[0] if per_channel else 1
    row_len = w.numel() // rows
    block = block or min(4096, max(128, triton.next_power_of_2(row_len)))
    n_blocks = triton.cdiv(row_len, block)
    scale_shape = (rows,) + (1,) * (w.dim() - 1)
    codes, scale, w_q = out or (torch.empty_like(w, dtype=torch.int8),
                                torch.empty(scale_shape, dtype=torch.float32, device=w.device), torch.empty_like(w))
    partials = torch.empty(rows, n_blocks, dtype=torch.float64, device=w.device)
    absmean_partials[(rows, n_blocks)](w, partials, row_len, n_blocks, BLOCK=block)
    ternarize[(rows, n_blocks)](w, partials, codes, w_q, scale, row_len, n_blocks, eps, BLOCK=block,
                                BLOCKS_POW2=triton.next_power_of_2(n_blocks))
    return codes, scale, w_q


@triton.jit
def packed_matmul_kernel(x_ptr, x_scale_ptr, w_ptr, w_scale_ptr, y_ptr, M, N, K, K4,
                         stride_xm, stride_wn, stride_ym,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K4: tl.constexpr):
    # int64 rows and columns: rm * stride_xm and the like pass 2^31 on large inputs (see Offsets above)
    rm = tl.program_id(0).to(tl.int64) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1).to(tl.int64) * BLOCK_N + tl.arange(0, BLOCK_N)
    rb = tl.arange(0, BLOCK_K4)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    for b0 in range(0, K4, BLOCK_K4):
        # [BLOCK_K4, BLOCK_N] packed bytes, already transposed for the dot; masked bytes are code 0
        b = b0 + rb
        packed = tl.load(w_ptr + rn[None, :] * stride_wn + b[:, None], mask=(b[:, None] < K4) & (rn[None, :] < N),
                         other=0).to(tl.int32)
        # Field j of byte b holds the code of k = 4b + j, so each field multiplies a stride-4 slice of x.
        for j in tl.static_range(4):
            field = (packed >> (2 * j)) & 3
            codes = (field - 2 * (field & 2)).to(tl.int8)
            k = 4 * b + j
            x = tl.load(x_ptr + rm[:, None] * stride_xm + k[None, :], mask=(rm[:, None] < M) & (k[None, :] < K),
                        other=0)
            acc = tl.dot(x, codes, acc)
    x_scale = tl.load(x_scale_ptr + rm, mask=rm < M, other=0.0)
    w_scale = tl.load(w_scale_ptr + rn, mask=rn < N, other=0.0)
    y = acc.to(tl.float32) * x_scale[:, None] * w_scale[None, :]
    tl.store(y_ptr + rm[:, None] * stride_ym + rn[None, :], y, mask=(rm[:, None] < M) & (rn[None, :] < N))


def packed_matmul_reference(x_q, x_scale, packed, w_scale):
    """y[m, n] = (Σ_k x_q[m, k]·code[n, k]) · x_scale[m] · w_scale[n] as float32, in plain PyTorch.
    float64 holds every sum exactly (float32 would only below 2^24), on CPU and CUDA alike."""
    codes = unpack_codes(packed, x_q.shape[1])
    acc = x_q.double() @ codes.double().T
    return acc.float() * x_scale[:, None] * w_scale.expand(packed.shape[0])[None, :]


def packed_matmul(x_q, x_scale, packed, w_scale, out=None):
    """The Triton kernel for packed_matmul_reference: x_q int8 [M, K], x_scale float32 [M], packed uint8
    [N, ceil(K / 4)], w_scale float32 [N] or [1]. Returns float32 [M, N] (written into `out` if given)."""
    (m, k), n = x_q.shape, packed.shape[0]
    if packed.shape[1] != triton.cdiv(k, 4):
        raise UserError(f'packed weight has {packed.shape[1]} bytes per row, expected ceil({k} / 4)')
    x_q, packed = x_q.contiguous(), packed.contiguous()
    w_scale = w_scale.float().expand(n).contiguous()
    y = out if out is not None else torch.empty(m, n, dtype=torch.float32, device=x_q.device)
    grid = (triton.cdiv(m, 64), triton.cdiv(n, 64))
    packed_matmul_kernel[grid](x_q, x_scale.float().contiguous(), packed, w_scale, y, m, n, k, packed.shape[1],
                               x_q.stride(0), packed.stride(0), y.stride(0), BLOCK_M=64, BLOCK_N=64, BLOCK_K4=32)
    return y


def packed_linear(x, packed, w_scale, bias=None, matmul=packed_matmul):
    """F.linear with 8-bit per-row activations and a packed ternary weight; float32 [..., N]."""
    x_q, x_scale = act_quant(x.reshape(-1, x.shape[-1]), 8)
    y = matmul(x_q, x_scale.view(-1), packed, w_scale)
    if bias is not None:
        y = y + bias.float()
    return y.view(*x.shape[:-1], packed.shape[0])


def pair(value):
    return tuple(value) if isinstance(value, (tuple, list)) else (value, value)


def conv_padding(padding, kernel_size, dilation):
    """Integer padding for 'same' (odd kernels) or 'valid', as nn.Conv2d accepts them."""
    if padding == 'valid':
        return (0, 0)
    if padding == 'same':
        if any(k % 2 == 0 for k in kernel_size):
            raise UserError("padding='same' with an even kernel pads unevenly; pass integer padding")
        return tuple(d * (k - 1) // 2 for k, d in zip(kernel_size, dilation))
    return padding


def packed_conv2d(x, packed, w_scale, kernel_size, bias=None, stride=1, padding=0, dilation=1,
                  matmul=packed_matmul):
    """F.conv2d with 8-bit per-sample activations and a packed ternary weight, via im2col; float32 NCHW."""
    kernel_size, stride, dilation = pair(kernel_size), pair(stride), pair(dilation)
    padding = pair(conv_padding(padding, kernel_size, dilation))
    n, _, h, w = x.shape
    x_q, x_scale = act_quant(x, 8, dims=(-3, -2, -1))
    # unfold works on floats; integers up to 127 are exact in float32
    cols = F.unfold(x_q.float(), kernel_size, dilation, padding, stride)
    positions = cols.shape[-1]
    rows = cols.transpose(1, 2).reshape(n * positions, -1).to(torch.int8)
    y = matmul(rows, x_scale.view(n).repeat_interleave(positions), packed, w_scale)
    if bias is not None:
        y = y + bias.float()
    h_out, w_out = [(size + 2 * p - d * (k - 1) - 1) // s + 1
                    for size, p, d, k, s in zip((h, w), padding, dilation, kernel_size, stride)]
    return y.view(n, h_out, w_out, -1).permute(0, 3, 1, 2)
