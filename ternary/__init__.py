"""BitNet b1.58 ternary weights for the ladder. Modules, each importing only those before it:

    quant.py    the maths: absmean ternary codes, absmax int8 activations, straight-through gradient
    pack.py     2-bit packing of the codes, four to a byte
    kernels.py  Triton kernels beside their PyTorch references (imported on first use on CUDA, not here)
    layers.py   TernaryConv2d / TernaryLinear and `convert`, which swaps them into a model in place
    export.py   the packed file (export_packed, load_packed, export_from_flags: --export-packed) and
                convert_from_flags, the --ternary toggle
    distill.py  distillation from a saved full-precision model (--teacher) and save_model (--save-model)

flags.py declares the run flags above (FLAGS, for parse_flags); bench.py times the kernels (python -m ternary.bench)."""
from ternary.distill import distill_from_flags, load_teacher, save_model
from ternary.export import convert_from_flags, export_from_flags, export_packed, load_packed, model_size_bytes
from ternary.flags import FLAGS
from ternary.layers import TernaryConv2d, TernaryLinear, convert
from ternary.pack import pack_codes, unpack_codes
from ternary.quant import act_quant, ste, weight_quant
