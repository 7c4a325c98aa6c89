"""Every hyp leaf is a flag; unknown flags and wrong types are errors, not silent no-ops."""
import pytest

from airbench.errors import UserError
from airbench.flags import parse_flags

HYP = {'opt': {'lr': 10.0, 'epochs': 9.9, 'batch_size': 1024}, 'aug': {'flip': 'random', 'cutout': 0},
       'net': {'compile': True}}


def test_overrides_reach_the_resolved_copy_only():
    hyp, args = parse_flags(HYP, ['--lr', '11.5', '--batch-size', '512', '--flip', 'alternating', '--runs', '3'])
    assert hyp['opt'] == {'lr': 11.5, 'epochs': 9.9, 'batch_size': 512}
    assert hyp['aug']['flip'] == 'alternating' and args.runs == 3
    assert HYP['opt']['lr'] == 10.0
    assert not hasattr(args, 'lr')  # hyp leaves live in hyp only
    assert args.device == 'cpu' and args.ternary is False and args.warmup is True


@pytest.mark.parametrize('argv, value', [([], True), (['--no-compile'], False), (['--compile=false'], False),
                                         (['--compile', 'yes'], True), (['--compile'], True)])
def test_booleans(argv, value):
    assert parse_flags(HYP, argv)[0]['net']['compile'] is value


@pytest.mark.parametrize('argv, message', [
    (['--learning-rate', '1'], 'unrecognized arguments: --learning-rate 1'),
    (['--l', '1'], 'unrecognized arguments'),  # no abbreviations
    (['--batch-size', '51.2'], "invalid int value: '51.2'"),
    (['--lr', 'fast'], "invalid float value: 'fast'"),
    (['--compile', 'maybe'], 'expected true or false'),
    (['--device', 'cuda'], 'no CUDA GPU is visible'),
    (['--device', 'tpu'], "--device must be 'cuda', 'cpu' or 'auto'"),
])
def test_bad_flags_are_one_line_errors(argv, message):
    with pytest.raises(UserError, match=message) as info:
        parse_flags(HYP, argv)
    assert '\n' not in str(info.value)


def test_leaf_names_must_be_unique():
    with pytest.raises(ValueError, match="'lr' is not unique"):
        parse_flags({'opt': {'lr': 1.0}, 'net': {'lr': 2.0}}, [])
    with pytest.raises(ValueError, match="'runs' is not unique"):
        parse_flags({'opt': {'runs': 1}}, [])


def test_a_script_can_set_its_own_run_flag_defaults():
    _, args = parse_flags(HYP, [], defaults={'ternary': True})
    assert args.ternary is True
    _, args = parse_flags(HYP, ['--no-ternary'], defaults={'ternary': True})
    assert args.ternary is False
    with pytest.raises(ValueError, match='unknown run flags'):
        parse_flags(HYP, [], defaults={'ternery': True})


@pytest.mark.parametrize('argv, message', [
    (['--epochs', '0'], r'--epochs must be > 0, got 0.0'),
    (['--epochs', '-1'], r'--epochs must be > 0'),
    (['--batch-size', '0'], r'--batch-size must be > 0, got 0'),
    (['--subset', '-5'], r'--subset must be >= 0'),
    (['--subset', '500'], r'training set \(500 images\) must hold at least one batch of 1,024: lower --batch-size or raise --subset'),
    (['--batch-size', '60000'], r'training set \(50,000 images\) must hold at least one batch of 60,000: lower --batch-size$'),
    (['--cutout', '40'], r'--cutout must be in 0..32'),
    (['--flip', 'sideways'], r'--flip must be none, random, alternating, got sideways'),
    (['--epochs', 'inf'], r'--epochs must be a finite number, got inf'),
    (['--lr', 'nan'], r'--lr must be a finite number, got nan'),
])
def test_values_no_run_can_use_are_one_line_errors(argv, message):
    with pytest.raises(UserError, match=message) as info:
        parse_flags(HYP, argv)
    assert '\n' not in str(info.value)


def test_values_at_the_edge_of_their_range_pass():
    hyp, args = parse_flags(HYP, ['--subset', '1024', '--epochs', '0.01', '--cutout', '32'])
    assert hyp['opt']['epochs'] == 0.01 and args.subset == 1024 and hyp['aug']['cutout'] == 32


def test_every_shared_hyp_leaf_of_the_rungs_has_a_range():
    """A new leaf in a rung's hyp should get its range here too (or be added on purpose to the exceptions)."""
    import importlib
    from airbench.flags import HYP_RANGES, flag_leaves
    rungs = ['main0_network', 'main1_whiten', 'main2_dirac', 'main3_scalebias', 'main4_freeze', 'main5_lookahead',
             'main6_tta', 'main7_mirror', 'main8_compile', 'train_resnet18', 'ternary94']
    leaves = {path[-1] for name in rungs for path, _ in flag_leaves(importlib.import_module(name).hyp)}
    assert leaves - set(HYP_RANGES) == set()


@pytest.mark.parametrize('argv, message', [
    (['--momentum', '1'], r'--momentum must be in \[0, 1\), got 1.0'),
    (['--label-smoothing', '1.5'], r'--label-smoothing must be in \[0, 1\)'),
    (['--translate', '-1'], r'--translate must be in 0..31'),
    (['--tta-level', '3'], r'--tta-level must be 0, 1 or 2, got 3'),
    (['--compile-mode', 'max-autotune'], r'--compile-mode must be default, max-autotune-no-cudagraphs, got max-a'),
])
def test_a_rungs_own_leaves_are_range_checked(argv, message):
    import main8_compile
    with pytest.raises(UserError, match=message):
        parse_flags(main8_compile.hyp, argv)


def test_main8_takes_a_compile_mode_without_cuda_graphs():
    import main8_compile
    hyp, _ = parse_flags(main8_compile.hyp, ['--compile-mode', 'max-autotune-no-cudagraphs'])
    assert hyp['net']['compile_mode'] == 'max-autotune-no-cudagraphs'
    assert main8_compile.hyp['net']['compile_mode'] == 'default'  # the module's own dict is not changed
