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
