"""main9_muon.py's optimizer: the Newton-Schulz orthogonalization, which parameters SGD and Muon move, the schedules."""
import argparse
import copy

import pytest
import torch

import main9_muon as rung
from ternary.export import convert_from_flags

TINY_NET = dict(rung.hyp['net'], block1=8, block2=16, block3=16)


def conv_shapes(net):
    """(C_out, C_in*3*3) of the rung's six 3x3 convs."""
    model = rung.make_net(net, 'cpu')
    return [m.weight.flatten(1).shape for m in model.modules() if isinstance(m, rung.Conv)]


def singular_values_of(matrix):
    """From the eigenvalues of the smaller Gram matrix, in float64: LAPACK's SVD of a 256 x 2304 matrix takes
    seconds on a small CPU."""
    matrix = matrix.double()
    gram = matrix @ matrix.T if matrix.size(0) <= matrix.size(1) else matrix.T @ matrix
    return torch.linalg.eigvalsh(gram).clamp(min=0).sqrt()


def test_newton_schulz_brings_the_singular_values_of_the_rungs_shapes_into_its_band():
    """The band newton_schulz's docstring states, (0.6, 1.25), on random matrices of the six convs' shapes at the
    default widths, and on the tall transposes (which the iteration turns around)."""
    shapes = conv_shapes(rung.hyp['net'])
    assert [tuple(s) for s in shapes] == [(64, 24 * 9), (64, 64 * 9), (256, 64 * 9)] + [(256, 256 * 9)] * 3
    generator = torch.Generator().manual_seed(0)
    for rows, cols in shapes + [(cols, rows) for rows, cols in shapes[:3]]:
        grad = torch.randn(rows, cols, generator=generator)
        update = rung.newton_schulz(grad)
        assert update.shape == grad.shape and update.dtype == torch.bfloat16
        singular_values = singular_values_of(update)
        assert 0.6 < singular_values.min() and singular_values.max() < 1.25, (rows, cols)


def test_newton_schulz_keeps_the_singular_vectors():
    """Only the singular values change: U S V^T goes to about U S' V^T, so the update stays aligned with grad."""
    grad = torch.randn(64, 216, generator=torch.Generator().manual_seed(1))
    update = rung.newton_schulz(grad).float()
    u, _, vh = torch.linalg.svd(grad, full_matrices=False)
    middle = u.T @ update @ vh.T  # diagonal (S') when the singular vectors are kept
    off_diagonal = middle - torch.diag(torch.diagonal(middle))
    assert off_diagonal.abs().max() < 0.05 * torch.diagonal(middle).min()


def train_one_step(model, opt, steps=10, epoch_steps=5):
    """One step of the rung's optimizers on a random batch; returns (optimizers, schedulers)."""
    generator = torch.Generator().manual_seed(2)
    inputs, labels = torch.randn(16, 3, 32, 32, generator=generator), torch.randint(0, 10, (16,), generator=generator)
    optimizers, schedulers = rung.make_optimizer(model, steps, epoch_steps, opt)
    model.zero_grad(set_to_none=True)
    torch.nn.functional.cross_entropy(model(inputs), labels, reduction='sum').backward()
    for optimizer, scheduler in zip(optimizers, schedulers):
        optimizer.step()
        scheduler.step()
    return optimizers, schedulers


@pytest.fixture
def eager(monkeypatch):
    """Muon's orthogonalization in eager mode: compiling it costs half a minute on a CPU (the rung's runs do)."""
    monkeypatch.setattr(rung, 'orthogonalize', rung.newton_schulz)


@pytest.mark.parametrize('ternary', [False, True])
def test_one_step_moves_every_trainable_parameter_and_no_frozen_one(ternary, eager):
    torch.manual_seed(0)
    model = rung.make_net(TINY_NET, 'cpu')
    rung.reinit_net(model)
    if ternary:  # the latent weights are what Muon updates; ternary convs stay Conv subclasses
        flags = dict(ternary_acts=0, ternary_per_channel=False, ternary_keep_first=True, ternary_keep_last=False)
        convert_from_flags(model, argparse.Namespace(ternary=True, **flags))
        assert type(model.layers[0].conv1).__name__ == 'TernaryConv'
    before = copy.deepcopy(dict(model.named_parameters()))
    optimizers, _ = train_one_step(model, rung.hyp['opt'])
    [filters] = [group['params'] for group in optimizers[1].param_groups]  # Muon's
    assert len(filters) == 6 and all(p.dim() == 4 and p.shape[-2:] == (3, 3) for p in filters)
    in_optimizers = [p for optimizer in optimizers for group in optimizer.param_groups for p in group['params']]
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert len(in_optimizers) == len(trainable) and {id(p) for p in in_optimizers} == {id(p) for p in trainable}
    for name, p in model.named_parameters():
        moved = not torch.equal(p, before[name])
        assert moved == p.requires_grad, name  # the whitening weight and the BatchNorm weights stay frozen
    assert not model.whiten.weight.requires_grad and not model.layers[0].norm1.weight.requires_grad


def test_muon_rescales_each_filter_bank_to_norm_sqrt_c_out_before_its_step(eager):
    torch.manual_seed(0)
    model = rung.make_net(TINY_NET, 'cpu')
    opt = dict(rung.hyp['opt'], muon_lr=1e-30)  # a step too small to move the rescaled weights
    train_one_step(model, opt)
    for conv in [m for m in model.modules() if isinstance(m, rung.Conv)]:
        assert conv.weight.norm().item() == pytest.approx(len(conv.weight) ** 0.5, rel=1e-5)


def test_every_lr_decays_linearly_to_zero_without_warmup_the_whitening_biass_over_its_epochs(eager):
    """As airbench94_muon: the lr of step k (from 0) is lr * (1 - k / total), the whitening bias's
    bias_lr * (1 - k / (whiten_bias_epochs * steps per epoch))."""
    opt = rung.hyp['opt']
    schedule = rung.lr_schedule(200, opt['warmup_frac'], opt['lr_start'], opt['lr_end'])
    assert [schedule(k) for k in range(200)] == pytest.approx([1 - k / 200 for k in range(200)])
    model = rung.make_net(TINY_NET, 'cpu')
    (sgd, muon), _ = train_one_step(model, opt, steps=10, epoch_steps=2)  # whitening bias: 3 epochs of 2 steps
    whiten, norms, head = (group['lr'] for group in sgd.param_groups)
    assert (whiten, norms, head) == pytest.approx((opt['bias_lr'] * 5 / 6, opt['bias_lr'] * 0.9, opt['lr'] * 0.9))
    assert muon.param_groups[0]['lr'] == pytest.approx(opt['muon_lr'] * 0.9)


def test_two_muon_steps_follow_nesterov_then_newton_schulz_at_the_real_lr(eager):
    """w <- w * sqrt(C_out) / |w| - lr * NS(g + m * b), b <- m * b + g, written out for two steps of the rung's lr
    and momentum: the second step is where Nesterov differs from plain momentum (NS removes the first's scale)."""
    generator = torch.Generator().manual_seed(3)
    weight = torch.nn.Parameter(torch.randn(16, 8, 3, 3, generator=generator))
    grads = [torch.randn(16, 8, 3, 3, generator=generator) for _ in range(2)]
    lr, momentum = rung.hyp['opt']['muon_lr'], rung.hyp['opt']['muon_momentum']
    muon = rung.Muon([weight], lr=lr, momentum=momentum)
    expected, buffer = weight.detach().clone(), torch.zeros_like(weight)
    for grad in grads:
        weight.grad = grad.clone()
        muon.step()
        buffer = momentum * buffer + grad
        update = rung.newton_schulz((grad + momentum * buffer).flatten(1)).view_as(expected)
        expected = expected * 16**0.5 / expected.norm() - lr * update
        # NS runs in bf16: a last-bit difference in its input may move an update entry by a bf16 ulp (< 1% of it)
        torch.testing.assert_close(weight.detach(), expected, rtol=0, atol=lr * 1e-2)
    plain = rung.newton_schulz(buffer.flatten(1)).view_as(expected)  # what plain momentum would have stepped by
    assert not torch.allclose(update.float(), plain.float(), atol=1e-2)
