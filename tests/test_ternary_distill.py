"""ternary/distill.py: the distillation loss, saving models, loading teachers, and distill_from_flags."""
import argparse

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from common.errors import UserError
from ternary import convert, distill_from_flags, load_teacher, save_model
from ternary.distill import soft_target_loss

SCRIPT = __file__  # load_teacher's default: the file that defines make_net


def make_net(device='cpu', width=8):
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 10, bias=False)).to(device)


def make_wide_net(device='cpu'):
    return make_net(device, width=12)


def flags(**overrides):
    args = dict(device='cpu', teacher=None, kd_alpha=0.5, kd_temperature=4.0)
    return argparse.Namespace(**{**args, **overrides})


def smoothed_cross_entropy(outputs, labels, inputs):
    """A rung's own per-example loss."""
    return F.cross_entropy(outputs, labels, label_smoothing=0.1, reduction='none')


def direct_kl(student_logits, teacher_logits, T):
    """KL(softmax(teacher / T) ‖ softmax(student / T)) per example, from the definition."""
    p_t, p_s = F.softmax(teacher_logits / T, dim=1), F.softmax(student_logits / T, dim=1)
    return (p_t * (p_t.log() - p_s.log())).sum(dim=1)


def test_soft_target_loss_is_the_kl_divergence_and_vanishes_for_equal_logits():
    student, teacher = torch.randn(6, 10), torch.randn(6, 10)
    torch.testing.assert_close(soft_target_loss(student, teacher, 2.5), direct_kl(student, teacher, 2.5))
    torch.testing.assert_close(soft_target_loss(student, student, 3.0), torch.zeros(6), atol=1e-6, rtol=0)


def test_save_model_format_and_compiled_prefix(tmp_path):
    model = make_net()
    path = tmp_path / 'sub' / 'teacher.pt'
    save_model(torch.compile(model), path, SCRIPT)  # the wrapper is not run, so nothing compiles
    checkpoint = torch.load(path, weights_only=True)
    assert checkpoint['format'] == 'cifar-ladder-model-v1'
    assert list(checkpoint['state_dict']) == list(model.state_dict())
    assert [p.name for p in path.parent.iterdir()] == ['teacher.pt']  # no temporary file left behind
    save_model(model, None, SCRIPT)


def test_load_teacher_restores_weights_in_eval_mode_without_grad(tmp_path):
    model = make_net()
    model[1].running_mean.uniform_()
    save_model(model, tmp_path / 't.pt', SCRIPT)
    teacher = load_teacher(tmp_path / 't.pt', make_net, 'cpu')
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    for key, value in model.state_dict().items():
        assert torch.equal(teacher.state_dict()[key], value)


def test_teacher_errors_are_one_line_user_errors(tmp_path):
    with pytest.raises(UserError, match='no such file'):
        load_teacher(tmp_path / 'missing.pt', make_net, 'cpu')
    (tmp_path / 'garbage.pt').write_bytes(b'not a checkpoint at all' * 10)
    fix = 'train a teacher with --no-ternary --save-model PATH and pass that PATH$'
    with pytest.raises(UserError, match=f'not a model saved .*{fix}'):
        load_teacher(tmp_path / 'garbage.pt', make_net, 'cpu')
    torch.save({'weights': 1}, tmp_path / 'other_format.pt')
    with pytest.raises(UserError, match=f'not a model saved .*{fix}'):
        load_teacher(tmp_path / 'other_format.pt', make_net, 'cpu')
    save_model(make_net(), tmp_path / 'other_script.pt', 'main3_other.py')
    with pytest.raises(UserError, match='main3_other.py'):
        load_teacher(tmp_path / 'other_script.pt', make_net, 'cpu')
    save_model(make_net(), tmp_path / 'narrow.pt', SCRIPT)
    with pytest.raises(UserError, match=r"^--teacher .*narrow.pt holds another architecture: first mismatch at "
                                        r"'0\.weight' .*: pass the width flags the teacher was trained with") as error:
        load_teacher(tmp_path / 'narrow.pt', make_wide_net, 'cpu')
    assert '\n' not in str(error.value)


REMOVED = object()


def edited_checkpoint(path, key, value):
    """A model saved with save_model, then one field changed by hand (or REMOVED)."""
    save_model(make_net(), path, SCRIPT)
    checkpoint = torch.load(path, weights_only=True)
    if value is REMOVED:
        del checkpoint[key]
    else:
        checkpoint[key] = value
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize('key,value,message', [
    ('state_dict', {'0.weight': [1.0, 2.0]}, 'not named tensors'),
    ('state_dict', {0: torch.zeros(3)}, 'not named tensors'),
    ('script', 3, 'names the script that saved it as 3'),
    ('script', None, 'names the script that saved it as None'),
    ('script', REMOVED, 'names the script that saved it as None'),
    ('ternary', 'yes', "has ternary 'yes', expected true or false"),
])
def test_edited_checkpoints_raise_one_line_user_errors(tmp_path, key, value, message):
    path = edited_checkpoint(tmp_path / 't.pt', key, value)
    with pytest.raises(UserError, match=message) as error:
        load_teacher(path, make_net, 'cpu')
    assert '\n' not in str(error.value)


def test_a_ternary_model_is_no_teacher(tmp_path):
    """--ternary --save-model saves latent weights, which are not the model that was trained."""
    model = convert(make_net(), keep=('0',))
    save_model(torch.compile(model), tmp_path / 'ternary.pt', SCRIPT)  # found through the compiled wrapper too
    with pytest.raises(UserError, match='is a ternary model') as error:
        load_teacher(tmp_path / 'ternary.pt', make_net, 'cpu')
    assert '\n' not in str(error.value)
    save_model(make_net(), tmp_path / 'full.pt', SCRIPT)
    assert torch.load(tmp_path / 'full.pt', weights_only=True)['ternary'] is False
    load_teacher(edited_checkpoint(tmp_path / 'old.pt', 'ternary', REMOVED), make_net, 'cpu')  # before the field


def test_distill_from_flags_without_teacher_returns_the_loss_itself():
    assert distill_from_flags(smoothed_cross_entropy, make_net, flags()) is smoothed_cross_entropy


def test_distill_from_flags_with_teacher_matches_the_direct_formula(tmp_path):
    teacher = make_net()
    save_model(teacher, tmp_path / 't.pt', SCRIPT)
    alpha, T = 0.7, 2.5
    args = flags(teacher=str(tmp_path / 't.pt'), kd_alpha=alpha, kd_temperature=T)
    loss_fn = distill_from_flags(smoothed_cross_entropy, make_net, args)
    student = convert(make_net(), keep=('0',))
    inputs, labels = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    outputs = student(inputs)
    loss = loss_fn(outputs, labels, inputs)
    teacher.eval()
    expected = ((1 - alpha) * smoothed_cross_entropy(outputs, labels, inputs)
                + alpha * T ** 2 * direct_kl(outputs, teacher(inputs), T))
    torch.testing.assert_close(loss, expected)
    loss.sum().backward()
    assert student[5].weight.grad is not None


def test_an_fp32_teacher_takes_fp16_batches(tmp_path):
    """train_resnet18 keeps fp32 weights while the loader yields fp16 batches on CUDA; the teacher must not see
    a dtype mismatch. On the CPU the batch is cast to the teacher's dtype."""
    teacher = make_net()
    save_model(teacher, tmp_path / 't.pt', SCRIPT)
    loss_fn = distill_from_flags(smoothed_cross_entropy, make_net, flags(teacher=str(tmp_path / 't.pt')))
    inputs, labels = torch.randn(4, 3, 8, 8).half(), torch.randint(0, 10, (4,))
    outputs = torch.randn(4, 10)
    teacher.eval()
    soft = direct_kl(outputs, teacher(inputs.float()), 4.0)  # the defaults: α = 0.5, T = 4
    expected = 0.5 * smoothed_cross_entropy(outputs, labels, inputs) + 0.5 * 4.0 ** 2 * soft
    torch.testing.assert_close(loss_fn(outputs, labels, inputs), expected)


def test_distill_from_flags_refuses_missing_and_foreign_teachers_in_one_line(tmp_path):
    save_model(make_net(), tmp_path / 'other_script.pt', 'main3_other.py')
    (tmp_path / 'garbage.pt').write_bytes(b'not a checkpoint at all' * 10)
    for name, message in [('missing.pt', 'no such file'), ('other_script.pt', 'main3_other.py'),
                          ('garbage.pt', 'not a model saved')]:
        with pytest.raises(UserError, match=message) as error:
            distill_from_flags(smoothed_cross_entropy, make_net, flags(teacher=str(tmp_path / name)))
        assert '\n' not in str(error.value)
