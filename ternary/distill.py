"""Knowledge distillation from a saved full-precision model of the same rung, and --save-model.

A rung wraps its own loss: `ternary.distill_from_flags(loss_fn, partial(make_net, hyp['net']), args)` returns
it unchanged without --teacher.

Distillation loss (Hinton et al. 2015), per example, with temperature T and weight α:

    loss = (1 - α) · loss_fn(student, label) + α · T² · KL(softmax(teacher / T) ‖ softmax(student / T))

where loss_fn is the rung's own per-example loss (its label-smoothed cross-entropy). T² keeps the gradient of
the soft term on the scale of the hard term as T changes.
"""
import inspect
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from common.errors import UserError
from common.files import atomic_output
from ternary.export import check_architecture, unwrap
from ternary.layers import TernaryLayer

MODEL_FORMAT = 'cifar-ladder-model-v1'


def soft_target_loss(student_logits, teacher_logits, T):
    """KL(softmax(teacher / T) ‖ softmax(student / T)) per example, float32, shape [N]."""
    log_p_student = F.log_softmax(student_logits.float() / T, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / T, dim=1)
    return F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction='none').sum(dim=1)


def save_model(model, path, script):
    """Writes {'format', 'script', 'ternary', 'state_dict'} to `path` (atomically); a no-op if path is None.
    `script` names the rung, e.g. its __file__; teachers are only accepted by the same rung. 'ternary' says
    whether the model has ternary layers: its state_dict then holds latent weights, which are no teacher."""
    if path is None:
        return
    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    ternary = any(isinstance(m, TernaryLayer) for m in unwrap(model).modules())
    checkpoint = {'format': MODEL_FORMAT, 'script': Path(script).name, 'ternary': ternary, 'state_dict': state}
    # Through a Python file, so a full disk is an OSError (torch.save to a path raises a RuntimeError).
    with atomic_output(path, 'the trained model (--save-model)') as tmp, open(tmp, 'wb') as f:
        torch.save(checkpoint, f)


def script_name(script):
    return Path(script).stem


def read_checkpoint(path):
    if not os.path.isfile(path):
        raise UserError(f'--teacher {path}: no such file; train a full-precision teacher with --save-model first')
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # torch.load raises many types for files it cannot read
        raise UserError(f'--teacher {path}: not a model saved with --save-model (torch cannot load it: '
                        f'{type(exc).__name__}); train a teacher with --no-ternary --save-model PATH and pass that '
                        'PATH') from None
    if (not isinstance(checkpoint, dict) or checkpoint.get('format') != MODEL_FORMAT
            or not isinstance(checkpoint.get('state_dict'), dict)):
        raise UserError(f'--teacher {path}: not a model saved with --save-model (expected format {MODEL_FORMAT}); '
                        'train a teacher with --no-ternary --save-model PATH and pass that PATH')
    if not all(isinstance(key, str) and isinstance(value, torch.Tensor)
               for key, value in checkpoint['state_dict'].items()):
        raise UserError(f'--teacher {path}: its state_dict holds entries that are not named tensors; '
                        f'save the teacher again with --save-model')
    if not isinstance(checkpoint.get('script'), str):
        raise UserError(f"--teacher {path}: names the script that saved it as {checkpoint.get('script')!r}, "
                        f'expected a file name; save the teacher again with --save-model')
    # files from before the field was written have no 'ternary': they are accepted
    if not isinstance(checkpoint.get('ternary', False), bool):
        raise UserError(f"--teacher {path}: has ternary {checkpoint['ternary']!r}, expected true or false; "
                        f'save the teacher again with --save-model')
    return checkpoint


def check_finite(state, path):
    """A teacher that diverged (NaN or inf weights) gives NaN soft targets: every student step would be NaN."""
    for key, tensor in state.items():
        if tensor.is_floating_point() or tensor.is_complex():
            bad = int((~torch.isfinite(tensor)).sum())
            if bad:
                raise UserError(f"--teacher {path}: '{key}' holds {bad:,} NaN or infinite value{'s' * (bad > 1)}: "
                                f'the teacher diverged or the file is damaged; train and save a teacher again')


def load_teacher(path, make_net, device, script=None):
    """make_net(device) loaded from `path`, in eval mode, without gradients. make_net is a function of the device
    alone, e.g. a rung's partial(make_net, hyp['net']). `script` defaults to the file that defines make_net; the
    checkpoint must come from the same script and architecture."""
    checkpoint = read_checkpoint(path)
    if checkpoint.get('ternary', False):
        raise UserError(f'--teacher {path} is a ternary model (saved with --ternary --save-model): '
                        f'distil from a full-precision model, saved without --ternary')
    script = script or inspect.getfile(getattr(make_net, 'func', make_net))  # functools.partial has .func
    if script_name(checkpoint['script']) != script_name(script):
        raise UserError(f"--teacher {path} was saved by {checkpoint['script']}, not by "
                        f"{Path(script).name}: distil from a model of the same script")
    check_finite(checkpoint['state_dict'], path)
    teacher = make_net(device)
    check_architecture(checkpoint['state_dict'], teacher, f'--teacher {path}',
                       'pass the width flags the teacher was trained with, or train a teacher with these')
    teacher.load_state_dict(checkpoint['state_dict'])
    teacher.eval().requires_grad_(False)
    return teacher


def distill_from_flags(loss_fn, make_net, args):
    """`loss_fn` itself without --teacher. With it, loss(outputs, labels, inputs) per example:
    (1 - α) · loss_fn(outputs, labels, inputs) + α · T² · KL(teacher ‖ student) at temperature T, where the
    teacher is make_net(args.device) loaded from --teacher and run on the same inputs. --kd-alpha and
    --kd-temperature were range-checked with the flags (ternary/flags.py)."""
    if args.teacher is None:
        return loss_fn
    teacher = load_teacher(args.teacher, make_net, args.device)
    teacher_dtype = next(teacher.parameters()).dtype
    alpha, T = args.kd_alpha, args.kd_temperature

    def distillation_loss(outputs, labels, inputs):
        # The loss runs inside the rung's per-step autocast region, so a bf16 run's teacher multiplies in bf16. An
        # fp32 teacher (train_resnet18) meeting fp16 batches runs as its script does on CUDA: in bf16 autocast;
        # otherwise the inputs take the teacher's dtype (fp16 batches reaching fp32 weights would be an error).
        use_autocast = teacher_dtype == torch.float32 and inputs.dtype == torch.float16 and inputs.is_cuda
        with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16, enabled=use_autocast):
            teacher_logits = teacher(inputs if use_autocast else inputs.to(teacher_dtype)).float()
        hard = loss_fn(outputs.float(), labels, inputs)  # in fp32, as the soft term is
        return (1 - alpha) * hard + alpha * T ** 2 * soft_target_loss(outputs, teacher_logits, T)
    return distillation_loss
