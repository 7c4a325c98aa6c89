"""BitNet b1.58 ternary weights for the ladder: layers and `convert`, the --ternary toggle with distillation
(`from_flags`), packed export. The Triton kernels (kernels.py) are imported on first use, not here."""
from ternary.distill import from_flags, kd_loss, load_teacher, save_model
from ternary.export import export_packed, load_packed, model_size_bytes, pack_codes, unpack_codes
from ternary.layers import TernaryConv2d, TernaryLinear, convert, convert_from_flags
from ternary.quant import act_quant, ste, weight_quant
