"""Knowledge distillation from a saved full-precision model, and the one call that sets up a rung's model.

A rung writes `model, loss_fn = ternary.from_flags(make_net, args, hyp['opt']['label_smoothing'])`: without
--ternary and --teacher this is make_net(device) and the rung's usual label-smoothed cross-entropy.

Distillation loss (Hinton et al. 2015), per example, with temperature T and weight α:

    loss = (1 - α) · CE_ls(student, label) + α · T² · KL(softmax(teacher / T) ‖ softmax(student / T))

T² keeps the gradient of the soft term on the scale of the hard term as T changes.
"""
import inspect
import os
from pathlib import Path

import torch
import torch.nn.functional as F

from airbench.errors import UserError
from airbench.files import atomic_write
from ternary.layers import TernaryLayer, convert_from_flags

MODEL_FORMAT = 'cifar-ladder-model-v1'


def kd_loss(student_logits, teacher_logits, labels, alpha, T, label_smoothing):
    """Per-example distillation loss, float32, shape [N] (reduction none)."""
    student = student_logits.float()
    hard = F.cross_entropy(student, labels, label_smoothing=label_smoothing, reduction='none')
    log_p_student = F.log_softmax(student / T, dim=1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / T, dim=1)
    soft = F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction='none').sum(dim=1)
    return (1 - alpha) * hard + alpha * T ** 2 * soft


def unwrap(model):
    """The module inside torch.compile's wrapper, so compiled and eager models share state_dict keys."""
    return getattr(model, '_orig_mod', model)


def save_model(model, path, script):
    """Writes {'format', 'script', 'ternary', 'state_dict'} to `path` (atomically); a no-op if path is None.
    `script` names the rung, e.g. its __file__; teachers are only accepted by the same rung. 'ternary' says
    whether the model has ternary layers: its state_dict then holds latent weights, which are no teacher."""
    if path is None:
        return
    state = {k: v.detach().cpu() for k, v in unwrap(model).state_dict().items()}
    ternary = any(isinstance(m, TernaryLayer) for m in unwrap(model).modules())
    with atomic_write(path) as tmp:
        torch.save({'format': MODEL_FORMAT, 'script': Path(script).name, 'ternary': ternary, 'state_dict': state},
                   tmp)


def script_name(script):
    return Path(script).stem


def read_checkpoint(path):
    if not os.path.isfile(path):
        raise UserError(f'--teacher {path}: no such file; train a full-precision teacher with --save-model first')
    try:
        checkpoint = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # torch.load raises many types for files it cannot read
        raise UserError(f'--teacher {path}: not a model saved with --save-model ({type(exc).__name__})') from None
    if (not isinstance(checkpoint, dict) or checkpoint.get('format') != MODEL_FORMAT
            or not isinstance(checkpoint.get('state_dict'), dict)):
        raise UserError(f'--teacher {path}: not a model saved with --save-model (expected format {MODEL_FORMAT})')
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


def check_architecture(state, model, path):
    """UserError naming the first key whose presence or shape differs between `state` and `model`."""
    expected = model.state_dict()
    for key in list(expected) + [k for k in state if k not in expected]:
        got = tuple(state[key].shape) if key in state else 'missing'
        want = tuple(expected[key].shape) if key in expected else 'absent'
        if got != want:
            raise UserError(f"{path} holds another architecture: first mismatch at '{key}' "
                            f"(file: {got}, this model: {want})")


def load_teacher(path, make_net, device, script=None):
    """make_net(device) loaded from `path`, in eval mode, without gradients. `script` defaults to the file
    that defines make_net; the checkpoint must come from the same script and architecture."""
    checkpoint = read_checkpoint(path)
    if checkpoint.get('ternary', False):
        raise UserError(f'--teacher {path} is a ternary model (saved with --ternary --save-model): '
                        f'distil from a full-precision model, saved without --ternary')
    script = script or inspect.getfile(getattr(make_net, 'func', make_net))  # functools.partial has .func
    if script_name(checkpoint['script']) != script_name(script):
        raise UserError(f"--teacher {path} was saved by {checkpoint['script']}, not by "
                        f"{Path(script).name}: distil from a model of the same script")
    teacher = make_net(device)
    check_architecture(checkpoint['state_dict'], teacher, path)
    teacher.load_state_dict(checkpoint['state_dict'])
    teacher.eval().requires_grad_(False)
    return teacher


def check_kd_flags(args):
    if not 0 <= args.kd_alpha <= 1:
        raise UserError(f'--kd-alpha must be in [0, 1], got {args.kd_alpha}')
    if not args.kd_temperature > 0:
        raise UserError(f'--kd-temperature must be positive, got {args.kd_temperature}')


def from_flags(make_net, args, label_smoothing):
    """(model, loss_fn) for a rung. model: make_net(args.device), made ternary by --ternary*.
    loss_fn(outputs, labels, inputs) -> per-example loss: label-smoothed cross-entropy, or with --teacher the
    distillation loss against the teacher's logits on the same inputs."""
    model = convert_from_flags(make_net(args.device), args)
    if args.ternary:
        from ternary.export import model_size_bytes  # here, not at the top: export imports this module
        print(f'model size: {model_size_bytes(model):,} bytes as trained, '
              f'{model_size_bytes(model, packed=True):,} bytes packed (ternary.export_packed)')
    if args.teacher is None:  # exactly the rung's own loss, so the default path changes nothing
        def loss_fn(outputs, labels, inputs):
            return F.cross_entropy(outputs, labels, label_smoothing=label_smoothing, reduction='none')
        return model, loss_fn
    check_kd_flags(args)
    teacher = load_teacher(args.teacher, make_net, args.device)

    teacher_dtype = next(teacher.parameters()).dtype
    # A teacher kept in fp32 (train_resnet18) runs as its script does on CUDA: in bf16 autocast. Elsewhere the
    # inputs take the teacher's dtype (fp16 batches reaching fp32 weights would be a dtype error).
    use_autocast = teacher_dtype == torch.float32 and torch.device(args.device).type == 'cuda'

    def kd_loss_fn(outputs, labels, inputs):
        # The teacher's softmax at temperature T is taken in fp32.
        with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16, enabled=use_autocast):
            teacher_logits = teacher(inputs if use_autocast else inputs.to(teacher_dtype)).float()
        return kd_loss(outputs, teacher_logits, labels, args.kd_alpha, args.kd_temperature, label_smoothing)
    return model, kd_loss_fn
