"""FLOP counts (reports/flops.py) of a tiny main7 net against a hand count; the README ladder table built on them."""
import math
from pathlib import Path

import pytest

from common.errors import UserError
from reports.flops import count_script, flops_table, image_flops, read_counts, step_flops, write_counts
from reports.table import ladder_block

ROOT = Path(__file__).resolve().parent.parent
TINY = ['--block1', '8', '--block2', '16', '--block3', '16', '--batch-size', '16']


def tiny_main7():
    import ternary
    from common.flags import parse_flags
    from reports.sidebyside import import_script
    rung = import_script(ROOT / 'main7_mirror.py', 'flops_test_main7')
    hyp, args = parse_flags(rung.hyp, rung.FLAGS, ['--device', 'cpu', '--dtype', 'fp32', *TINY])
    return rung, hyp, ternary.convert_from_flags(rung.make_net(hyp['net'], 'cpu'), args)


def hand_count():
    """Multiply-adds per image of main7 with widths 8, 16, 16: (whitening conv, first 3x3 conv, all layers).
    A conv's are out x in x kernel area x output pixels; each group's pool halves the side after its first conv."""
    whiten = 24 * 3 * 2 * 2 * 31 * 31             # 2x2 patches of 32x32: 31x31 outputs
    first = 8 * 24 * 9 * 31 * 31                   # group 1, then pooled to 15x15
    rest = (8 * 8 * 9 * 15 * 15 + 16 * 8 * 9 * 15 * 15 + 16 * 16 * 9 * 7 * 7   # group 2 pooled to 7x7
            + 16 * 16 * 9 * 7 * 7 + 16 * 16 * 9 * 3 * 3 + 16 * 10)           # group 3 pooled to 3x3, the head
    return whiten, first, whiten + first + rest


def test_a_step_and_an_eval_pass_of_a_tiny_main7_match_the_hand_count():
    rung, hyp, model = tiny_main7()
    whiten, first, forward = hand_count()
    # The backward computes each layer's input and weight gradients, 2 FLOPs per multiply-add each, except where
    # nothing needs them: the images and the frozen whitening weights; the first 3x3 conv's input gradient is
    # needed only while the whitening bias trains.
    backward = 2 * (forward - whiten)
    assert step_flops(rung, model, hyp, 16, True) == 2 * 16 * (forward + backward)
    assert step_flops(rung, model, hyp, 16, False) == 2 * 16 * (forward + backward - first)
    assert image_flops(rung, model, 2) == 6 * 2 * forward  # the mirror pairs of three crops
    assert image_flops(rung, model, 0) == 2 * forward


def test_a_run_is_the_steps_and_the_test_images_times_their_counts():
    counts = count_script(ROOT / 'main7_mirror.py', TINY)
    whiten, first, forward = hand_count()
    steps = math.ceil(9.9 * (50_000 // 16))  # main7's default 9.9 epochs
    bias_steps = 3 * (50_000 // 16)          # whiten_bias_epochs
    step = 2 * 16 * (3 * forward - 2 * whiten)
    train = bias_steps * step + (steps - bias_steps) * (step - 2 * 16 * first)
    assert counts['steps'] == steps and counts['batch_size'] == 16 and counts['epochs'] == 9.9
    assert counts['train_tflops'] == pytest.approx(train / 1e12, abs=1e-3)
    assert counts['eval_tflops'] == pytest.approx(10_000 * 12 * forward / 1e12, abs=1e-3)
    assert counts['total_tflops'] == pytest.approx((train + 10_000 * 12 * forward) / 1e12, abs=1e-3)
    epoch_evals = 10 * 10_000 * 2 * forward  # ceil(9.9) plain passes over the test set
    assert counts['total_with_epoch_evals_tflops'] == pytest.approx(counts['total_tflops'] + epoch_evals / 1e12,
                                                                     abs=2e-3)


COUNT = dict(batch_size=1024, epochs=9.9, steps=476, train_tflops=340.0, eval_tflops=14.0, total_tflops=354.0,
             epoch_evals_tflops=23.6, total_with_epoch_evals_tflops=377.6, torch='test')


def test_counts_are_merged_into_results_and_shown_beside_the_published_ones(tmp_path):
    write_counts(tmp_path, {'main7_mirror.py': COUNT})
    write_counts(tmp_path, {'main6_tta.py': dict(COUNT, epochs=1.0)})
    assert list(read_counts(tmp_path)) == ['main7_mirror.py', 'main6_tta.py']
    line = next(line for line in flops_table(read_counts(tmp_path)) if line.startswith('main7_mirror.py'))
    assert line.split()[-2:] == ['350', '1.01']  # published, ours / published
    rows = {line.split(' | ')[0].strip('| `'): line.split(' | ') for line in ladder_block(tmp_path).splitlines()
            if line.startswith('| `')}
    assert rows['main7_mirror.py'][2:] == ['9.9', '354', '378', '350 |']
    assert rows['main6_tta.py'][3] == 'stale: python -m reports flops'  # counted for 1 epoch, its hyp says 10.8
    assert rows['main0_network.py'][3:] == ['not counted', 'not counted', '1223 |']
    assert list(rows)[:2] == ['train_resnet18.py', 'main0_network.py'] and 'ternary94.py' in rows
    assert rows['main7_mirror.py'][1] == 'alternating ("mirror") flip instead of random flip'


def test_a_flops_file_that_is_not_json_is_one_line(tmp_path):
    (tmp_path / 'flops.json').write_text('{"main7_mirror.py": ')
    with pytest.raises(UserError, match='flops.json is not JSON .*python -m reports flops'):
        read_counts(tmp_path)
