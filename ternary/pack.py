"""2-bit packing of ternary codes: four codes per byte, for the packed file (export.py) and kernel (kernels.py).

Layout. A weight [C_out, C_in, k_h, k_w] is flattened to rows [C_out, K], K = C_in·k_h·k_w in the order
F.unfold uses, and each row is packed on its own, four codes per byte, the first in the lowest bits. A field is
the code's 2-bit two's complement: 0 -> 00, 1 -> 01, -1 -> 11 (10 is never written). Rows are zero-padded to a
multiple of 4 codes; a zero field is code 0, so padding adds nothing to a dot product. Worked example:

    codes    [-1,  0,  1,  1]
    fields   [11, 00, 01, 01]         in bits 1..0, 3..2, 5..4, 7..6
    byte     0b01_01_00_11 = 0x53 = 83

Decoding a field f: code = f - 2·(f & 2), so 3 -> -1, 1 -> 1, 0 -> 0, and the reserved 10 -> -2, which no
ternary weight is (export.load_packed refuses a file holding one, see count_reserved_fields).
"""
import torch
import torch.nn.functional as F


def packed_row_bytes(k):
    """Bytes of one packed row of k codes: ceil(k / 4)."""
    return (k + 3) // 4


def pack_codes(codes):
    """int8 codes [C_out, ...] in {-1, 0, 1} -> uint8 [C_out, ceil(K / 4)], the layout above."""
    rows = codes.reshape(codes.shape[0], -1).to(torch.int32) & 3
    rows = F.pad(rows, (0, -rows.shape[1] % 4))
    fields = rows.view(rows.shape[0], -1, 4) << torch.arange(0, 8, 2, device=codes.device)
    return fields.sum(dim=-1).to(torch.uint8)


def code_fields(packed):
    """uint8 [C_out, B] -> its 2-bit fields as int32 [C_out, B, 4], the first in the lowest bits."""
    return (packed.to(torch.int32)[:, :, None] >> torch.arange(0, 8, 2, device=packed.device)) & 3


def unpack_codes(packed, k):
    """uint8 [C_out, ceil(k / 4)] -> int8 codes [C_out, k]."""
    fields = code_fields(packed)
    codes = fields - 2 * (fields & 2)
    return codes.reshape(packed.shape[0], -1)[:, :k].to(torch.int8)


def count_reserved_fields(packed):
    """How many 2-bit fields of packed codes are 10, the field none of -1, 0, +1 is written as."""
    return int((code_fields(packed) == 2).sum())
