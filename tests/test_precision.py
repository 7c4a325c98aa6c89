"""--dtype: what 'auto' picks, the formats a run trains in, and the two traps of bf16 autocast on the CPU (stale
weight copies across one long autocast region; a whitening init computed in bf16)."""
import contextlib
import importlib
import json
import os
import re

import pytest
import torch
import torch.nn.functional as F

from common.errors import UserError
from common.flags import parse_flags
from common.precision import AVX512_CORE_FLAGS, autocast, native_bf16, onednn_below_avx512, resolve_dtype
from stats.diverged import read_divergences
from test_call_order import TINY
from test_rungs import run_script, tiny_flags

NET = ['--block1', '8', '--block2', '16', '--block3', '16']


def test_auto_picks_the_fastest_format_the_device_and_the_script_allow():
    assert resolve_dtype('auto', 'cuda') == 'fp16'
    assert resolve_dtype('auto', 'cuda:1', allowed=('auto', 'fp32', 'bf16')) == 'bf16'  # train_resnet18
    assert resolve_dtype('auto', 'cpu', flags={'avx512f', 'amx_bf16'}) == 'bf16'
    assert resolve_dtype('auto', 'cpu', flags={'avx512f', 'avx512_bf16'}) == 'bf16'
    assert resolve_dtype('auto', 'cpu', flags={'avx2', 'fma'}) == 'fp32'
    assert resolve_dtype('fp32', 'cuda') == 'fp32' and not native_bf16({'avx2'})
    # oneDNN held below its bf16 ISA (as CI's second pass does) emulates bf16: no longer native
    assert not native_bf16({'avx512_bf16'}, environ={'ONEDNN_MAX_CPU_ISA': 'AVX2'})
    assert native_bf16({'amx_bf16'}, environ={'ONEDNN_MAX_CPU_ISA': 'ALL'})


def test_onednn_kernels_are_avx2_ones_without_avx512_or_under_a_cap():
    avx512 = {'avx2', *AVX512_CORE_FLAGS}
    x86 = dict(machine='x86_64')
    assert not onednn_below_avx512(avx512, environ={}, **x86)
    assert not onednn_below_avx512(avx512, environ={'ONEDNN_MAX_CPU_ISA': 'AVX512_CORE_BF16'}, **x86)
    assert onednn_below_avx512(avx512, environ={'ONEDNN_MAX_CPU_ISA': 'avx2'}, **x86)
    assert onednn_below_avx512({'avx2', 'fma', 'avx512f'}, environ={}, **x86)  # no BW/VL/DQ: AVX2 kernels
    assert not onednn_below_avx512(set(), environ={'ONEDNN_MAX_CPU_ISA': 'AVX2'}, machine='aarch64')  # no x86 kernels


def test_resnet18_refuses_a_width_the_avx2_1x1_conv_corrupts(monkeypatch):
    resnet18 = importlib.import_module('train_resnet18')
    monkeypatch.setenv('ONEDNN_MAX_CPU_ISA', 'AVX2')  # as on an x86 CPU without AVX-512
    monkeypatch.setattr('platform.machine', lambda: 'x86_64')  # where this suite runs on Arm
    with pytest.raises(UserError, match=r'^--width 4: .*oneDNN#6035.*--width 8 or more$'):
        resnet18.make_net(dict(resnet18.hyp['net'], width=4), 'cpu')
    assert resnet18.make_net(dict(resnet18.hyp['net'], width=8), 'cpu').stem.out_channels == 8
    monkeypatch.undo()
    if not onednn_below_avx512():  # this CPU's own kernels, where AVX-512 ones: no such bug, the user's width stands
        assert resnet18.make_net(dict(resnet18.hyp['net'], width=4), 'cpu').stem.out_channels == 4


def test_a_cpu_capability_override_gets_an_inductor_cache_of_its_own(monkeypatch):
    # Inductor's cache ignores ATEN_CPU_CAPABILITY (issue 21), so parse_flags, which every script calls before it
    # compiles, gives each capability a cache folder of its own, unless the user chose one.
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    rung = importlib.import_module('main9_muon')
    monkeypatch.delenv('TORCHINDUCTOR_CACHE_DIR', raising=False)
    monkeypatch.setenv('ATEN_CPU_CAPABILITY', 'AVX2')
    parse_flags(rung.hyp, rung.FLAGS, ['--device', 'cpu'])
    assert os.environ['TORCHINDUCTOR_CACHE_DIR'] == default_cache_dir() + '-aten-avx2'
    monkeypatch.setenv('TORCHINDUCTOR_CACHE_DIR', '/the/users/own')
    parse_flags(rung.hyp, rung.FLAGS, ['--device', 'cpu'])
    assert os.environ['TORCHINDUCTOR_CACHE_DIR'] == '/the/users/own'
    monkeypatch.delenv('TORCHINDUCTOR_CACHE_DIR')
    monkeypatch.delenv('ATEN_CPU_CAPABILITY')
    parse_flags(rung.hyp, rung.FLAGS, ['--device', 'cpu'])
    assert 'TORCHINDUCTOR_CACHE_DIR' not in os.environ  # torch's own default stands


def test_the_resolved_dtype_is_in_the_hyp_and_fp16_is_refused_on_the_cpu():
    rung = importlib.import_module('main7_mirror')
    hyp, _ = parse_flags(rung.hyp, rung.FLAGS, ['--device', 'cpu'])
    assert hyp['net']['dtype'] == resolve_dtype('auto', 'cpu') and rung.hyp['net']['dtype'] == 'auto'
    with pytest.raises(UserError, match='--dtype fp16 needs a CUDA GPU'):
        parse_flags(rung.hyp, rung.FLAGS, ['--device', 'cpu', '--dtype', 'fp16'])
    resnet = importlib.import_module('train_resnet18')
    with pytest.raises(Exception, match='invalid choice'):
        parse_flags(resnet.hyp, resnet.FLAGS, ['--device', 'cpu', '--dtype', 'fp16'])


def test_fp32_and_bf16_runs_go_to_logs_of_their_own(synthetic_cache, tmp_path):
    flags = tiny_flags('main0_network.py', synthetic_cache, tmp_path)
    for dtype in ('fp32', 'bf16'):
        proc = run_script('main0_network.py', *flags, '--dtype', dtype, '--no-warmup')
        assert proc.returncode == 0, proc.stderr[-3000:]
    for dtype in ('fp32', 'bf16'):
        [row] = [json.loads(line) for line in (tmp_path / 'main0_network' / f'full__cpu-{dtype}.jsonl').open()]
        assert row['hyp']['net']['dtype'] == dtype and row['cpu_info']['model']


class HeadCheck:
    """A forward hook on the classifier: during a bf16 run its output must be its input times the classifier's
    weight as it is now, cast to bf16; with a stale autocast copy it is the weight of an earlier step."""

    def __init__(self, head):
        self.calls = self.stale = 0
        head.register_forward_hook(self.after_call)

    def after_call(self, module, args, output):
        if not module.training:
            return
        fresh = F.linear(args[0].detach().to(torch.bfloat16), module.weight.detach().to(torch.bfloat16))
        self.calls += 1
        self.stale += not torch.equal(output.detach(), fresh)


def bf16_tiny_run(synthetic_cache, outer_region):
    rung = importlib.import_module('main7_mirror')
    argv = [*TINY, *NET, '--dtype', 'bf16', '--lr', '50', '--data-dir', str(synthetic_cache)]
    hyp, args = parse_flags(rung.hyp, rung.FLAGS, argv)
    model, loss_fn, train_loader, test_loader, _ = rung.prepare(hyp, args)
    check = HeadCheck(model.head)
    start = model.head.weight.detach().clone()
    with torch.autocast('cpu', dtype=torch.bfloat16) if outer_region else contextlib.nullcontext():
        rung.main(hyp, 0, 0, model, loss_fn, train_loader, test_loader)
    assert not torch.equal(model.head.weight, start)  # the weights moved, so a stale copy would show
    return check


def test_a_bf16_forward_sees_the_weights_of_the_step_before(synthetic_cache):
    check = bf16_tiny_run(synthetic_cache, outer_region=False)
    assert check.calls == 5 and check.stale == 0  # 2100 images, batch 700: 3 steps an epoch, 1.4 epochs: 5


def test_the_staleness_check_bites_when_one_region_holds_the_run(synthetic_cache):
    check = bf16_tiny_run(synthetic_cache, outer_region=True)
    assert check.stale >= 1  # every step after the first trains on the initial weights' copies


def test_the_whitening_init_is_fp32_in_a_bf16_run(synthetic_cache, monkeypatch):
    rung = importlib.import_module('main7_mirror')
    hyp, args = parse_flags(rung.hyp, rung.FLAGS, [*TINY, *NET, '--dtype', 'bf16', '--data-dir', str(synthetic_cache)])
    model, loss_fn, train_loader, test_loader, _ = rung.prepare(hyp, args)
    seen = []

    def checked_init(conv, images):  # as main() calls it: outside any autocast region, on fp32 images
        seen.append((torch.is_autocast_enabled('cpu'), images.dtype))
        rung_init(conv, images)
        assert torch.isfinite(conv.weight).all() and conv.weight.dtype == torch.float32
    rung_init = rung.init_whitening_conv
    monkeypatch.setattr(rung, 'init_whitening_conv', checked_init)
    rung.main(hyp, 0, 0, model, loss_fn, train_loader, test_loader)
    assert seen == [(False, torch.float32)]
    with autocast('cpu', 'bf16'):
        assert model(train_loader.normalize(train_loader.images[:8])).dtype == torch.bfloat16  # convs, head in bf16


def test_a_diverged_run_stops_with_one_line_and_is_not_logged(synthetic_cache, tmp_path):
    flags = tiny_flags('main0_network.py', synthetic_cache, tmp_path)
    proc = run_script('main0_network.py', *flags, '--lr', '1e30', '--no-warmup', '--dtype', 'fp32')
    assert proc.returncode == 1 and proc.stderr.count('\n') == 1
    assert re.match(r'error: run 0 diverged: its training loss is (nan|inf|-inf) at epoch 0', proc.stderr)
    [record] = read_divergences(tmp_path / 'main0_network' / 'full__cpu-fp32.jsonl')  # beside the log, not in it
    assert (record['seed'], record['hyp']['opt']['lr'], record['script']) == (0, 1e30, 'main0_network.py')
    assert not list((tmp_path / 'main0_network').glob('*.jsonl')) or \
        not (tmp_path / 'main0_network' / 'full__cpu-fp32.jsonl').read_text()
