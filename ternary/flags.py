"""The --ternary toggle and its options, distillation (--teacher) and --save-model. A script passes FLAGS to
parse_flags."""
from common.errors import UserError
from common.flags import Flag, Flags
from ternary.layers import check_act_bits


def check_ternary_acts(bits):
    try:
        check_act_bits(bits)
    except UserError:
        raise UserError(f'--ternary-acts must be 0 (off) or 2..8 (bits), got {bits}') from None


def check_kd_alpha(alpha):
    if not 0 <= alpha <= 1:
        raise UserError(f'--kd-alpha must be in [0, 1], got {alpha}')


def check_kd_temperature(temperature):
    if not temperature > 0:
        raise UserError(f'--kd-temperature must be positive, got {temperature}')


FLAGS = Flags('ternary weights and distillation (ternary/)', run={
    'ternary': Flag(False, 'BitNet b1.58 ternary weights for convs and linears (see ternary/)'),
    'ternary_acts': Flag(0, 'with --ternary: 8 also quantizes activations to 8-bit absmax; 0: off', check_ternary_acts,
                         needs='ternary'),
    'ternary_per_channel': Flag(False, 'with --ternary: one weight scale per output channel instead of per tensor',
                                needs='ternary'),
    'ternary_keep_first': Flag(True, 'with --ternary: keep the first conv in full precision', needs='ternary'),
    'ternary_keep_last': Flag(False, 'with --ternary: keep the classifier in full precision', needs='ternary'),
    'teacher': Flag(None, 'distil from this saved full-precision model of the same script'),
    'kd_alpha': Flag(0.5, 'with --teacher: weight of the distillation term', check_kd_alpha, needs='teacher'),
    'kd_temperature': Flag(4.0, 'with --teacher: softmax temperature of the distillation term', check_kd_temperature,
                           needs='teacher'),
    'save_model': Flag(None, 'write the last trained model to this path'),
})
