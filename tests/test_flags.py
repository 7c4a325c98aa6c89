"""Every hyp leaf is a flag; unknown flags and wrong types are errors, not silent no-ops."""
import pytest

import airbench
import stats
import ternary
from common.errors import UserError
from common.flags import Flags, Range, build_parser, parse_flags

HYP = {'opt': {'lr': 10.0, 'epochs': 9.9, 'batch_size': 1024}, 'aug': {'flip': 'random', 'cutout': 0},
       'net': {'compile': True}}
PACKAGES = (stats.FLAGS, ternary.FLAGS, airbench.FLAGS)  # as a rung's FLAGS
FLAGS = PACKAGES + (Flags('test', ranges={'compile': Range(lambda v: isinstance(v, bool), 'true or false')}),)


def test_overrides_reach_the_resolved_copy_only():
    hyp, args = parse_flags(HYP, FLAGS, ['--lr', '11.5', '--batch-size', '512', '--flip', 'alternating', '--runs', '3'])
    assert hyp['opt'] == {'lr': 11.5, 'epochs': 9.9, 'batch_size': 512}
    assert hyp['aug']['flip'] == 'alternating' and args.runs == 3
    assert HYP['opt']['lr'] == 10.0
    assert not hasattr(args, 'lr')  # hyp leaves live in hyp only
    assert args.device == 'cpu' and args.ternary is False and args.warmup is True


@pytest.mark.parametrize('argv, value', [([], True), (['--no-compile'], False), (['--compile=false'], False),
                                         (['--compile', 'yes'], True), (['--compile'], True)])
def test_booleans(argv, value):
    assert parse_flags(HYP, FLAGS, argv)[0]['net']['compile'] is value


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
        parse_flags(HYP, FLAGS, argv)
    assert '\n' not in str(info.value)


def test_leaf_names_must_be_unique():
    with pytest.raises(ValueError, match="'lr' is not unique"):
        parse_flags({'opt': {'lr': 1.0}, 'net': {'lr': 2.0}}, FLAGS, [])
    with pytest.raises(ValueError, match="'runs' is not unique"):
        parse_flags({'opt': {'runs': 1}}, FLAGS, [])


def test_a_script_can_set_its_own_run_flag_defaults():
    _, args = parse_flags(HYP, FLAGS, [], defaults={'ternary': True})
    assert args.ternary is True
    _, args = parse_flags(HYP, FLAGS, ['--no-ternary'], defaults={'ternary': True})
    assert args.ternary is False
    with pytest.raises(ValueError, match='unknown run flags'):
        parse_flags(HYP, FLAGS, [], defaults={'ternery': True})


@pytest.mark.parametrize('argv, message', [
    (['--epochs', '0'], r'--epochs must be > 0, got 0.0'),
    (['--epochs', '-1'], r'--epochs must be > 0'),
    (['--batch-size', '0'], r'--batch-size must be > 0, got 0'),
    (['--subset', '-5'], r'--subset must be >= 0'),
    (['--subset', '500'], r'training set \(500 images\) must hold at least one batch of 1,024: lower --batch-size or raise --subset'),
    (['--batch-size', '60000'], r'training set \(50,000 images\) must hold at least one batch of 60,000: lower --batch-size$'),
    (['--cutout', '40'], r'--cutout must be in 0..32'),
    (['--flip', 'sideways'], r"--flip: invalid choice: 'sideways' \(choose from 'none', 'random', 'alternating'\)"),
    (['--epochs', 'inf'], r'--epochs must be a finite number, got inf'),
    (['--lr', 'nan'], r'--lr must be a finite number, got nan'),
])
def test_values_no_run_can_use_are_one_line_errors(argv, message):
    with pytest.raises(UserError, match=message) as info:
        parse_flags(HYP, FLAGS, argv)
    assert '\n' not in str(info.value)


def test_values_at_the_edge_of_their_range_pass():
    hyp, args = parse_flags(HYP, FLAGS, ['--subset', '1024', '--epochs', '0.01', '--cutout', '32'])
    assert hyp['opt']['epochs'] == 0.01 and args.subset == 1024 and hyp['aug']['cutout'] == 32


def test_a_hyp_leaf_without_a_declared_range_is_refused():
    with pytest.raises(ValueError, match="hyp leaf 'compile' has no range"):
        build_parser(HYP, PACKAGES)


def test_a_run_flag_declared_twice_is_refused():
    with pytest.raises(ValueError, match=r"run flags declared twice: \[.*'runs'"):
        build_parser(HYP, FLAGS + (stats.FLAGS,))


@pytest.mark.parametrize('argv, message', [
    (['--runs', '0'], '--runs must be a whole number >= 1, got 0'),
    (['--variant', 'a b'], '--variant must be a file-name-safe word'),
    (['--shard', '3/2'], '--shard must be K/N with 1 <= K <= N'),
    (['--gpus', 'first'], "--gpus must be 'all' or a list of GPU indices"),
    (['--teacher', 't.pt', '--kd-alpha', '1.5'], r'--kd-alpha must be in \[0, 1\], got 1.5'),
    (['--teacher', 't.pt', '--kd-temperature', '0'], '--kd-temperature must be positive, got 0.0'),
    (['--ternary', '--ternary-acts', '9'], r'--ternary-acts must be 0 \(off\) or 2..8 \(bits\), got 9'),
])
def test_each_packages_run_flags_are_checked_when_parsed(argv, message):
    """Before any data is read or model built: the packages' own checks (stats/, ternary/ flags.py)."""
    with pytest.raises(UserError, match=message) as info:
        parse_flags(HYP, FLAGS, argv)
    assert '\n' not in str(info.value)


def test_every_shared_hyp_leaf_of_the_rungs_has_a_range():
    """Every leaf of every script's hyp has a range declared by the package whose code reads it (build_parser
    refuses one without)."""
    import importlib
    from reports.ladder import SCRIPTS
    for script in SCRIPTS:
        rung = importlib.import_module(script.removesuffix('.py'))
        build_parser(rung.hyp, rung.FLAGS)


@pytest.mark.parametrize('rung, allowed', [('main5_lookahead', False), ('main6_tta', True)])
def test_tta_level_2_arrives_with_main6(rung, allowed):
    """Before main6 a rung has only the mirror view: --tta-level 2 would silently run level 1."""
    import importlib
    module = importlib.import_module(rung)
    if allowed:
        assert parse_flags(module.hyp, module.FLAGS, ['--tta-level', '2'])[0]['net']['tta_level'] == 2
    else:
        with pytest.raises(UserError, match=r'--tta-level: invalid choice: 2 \(choose from 0, 1\)'):
            parse_flags(module.hyp, module.FLAGS, ['--tta-level', '2'])


@pytest.mark.parametrize('argv, message', [
    (['--momentum', '1'], r'--momentum must be in \[0, 1\), got 1.0'),
    (['--label-smoothing', '1.5'], r'--label-smoothing must be in \[0, 1\)'),
    (['--translate', '-1'], r'--translate must be in 0..31'),
    (['--tta-level', '3'], r'--tta-level: invalid choice: 3 \(choose from 0, 1, 2\)'),
    (['--compile-mode', 'fastest'], r"--compile-mode: invalid choice: 'fastest'"),
    (['--block1', '1000000000'], '^--block1 must be in 1..4096, got 1000000000$'),  # not an allocation traceback
])
def test_a_rungs_own_leaves_are_range_checked(argv, message):
    import main8_compile
    with pytest.raises(UserError, match=message):
        parse_flags(main8_compile.hyp, main8_compile.FLAGS, argv)


def test_main8_compiles_in_max_autotune_as_airbench_and_takes_the_other_modes():
    import main8_compile
    assert main8_compile.hyp['net']['compile_mode'] == 'max-autotune'
    for mode in ('default', 'max-autotune-no-cudagraphs', 'reduce-overhead'):
        hyp, _ = parse_flags(main8_compile.hyp, main8_compile.FLAGS, ['--compile-mode', mode])
        assert hyp['net']['compile_mode'] == mode
    assert main8_compile.hyp['net']['compile_mode'] == 'max-autotune'  # the module's own dict is not changed


@pytest.mark.parametrize('argv, message', [
    (['--kd-alpha', '0.3'], '--kd-alpha only applies with --teacher, which is not set'),
    (['--kd-temperature', '2'], '--kd-temperature only applies with --teacher'),
    (['--ternary-acts', '8'], '--ternary-acts only applies with --ternary, which is not set: add --ternary or drop'),
    (['--ternary-per-channel'], '--ternary-per-channel only applies with --ternary'),
    (['--ternary-keep-last'], '--ternary-keep-last only applies with --ternary'),
])
def test_flags_that_need_another_flag_are_refused_without_it(argv, message):
    # Silently ignored, they would still enter the logged config and make the next plain run "a different config".
    with pytest.raises(UserError, match=message):
        parse_flags(HYP, FLAGS, argv)


@pytest.mark.parametrize('argv, message', [
    (['--lr', '1e300'], r'^--lr 1e\+300 is beyond the range of fp32 \(about 3.4e38\).*pass a smaller value$'),
    (['--teacher', 't.pt', '--kd-temperature', 'inf'], '^--kd-temperature must be a finite number, got inf$'),
    (['--data-dir', ''], r'^--data-dir is empty \(an unset shell variable\?\): pass a value or leave the flag out'),
    (['--teacher', ''], '^--teacher is empty'),
    (['--variant', 'ternary'], '^--variant ternary names the log of ternary runs, but these flags train '
                               'full-precision runs: leave --variant out .they go to full. or pick another name$'),
    (['--ternary', '--variant', 'full'], '^--variant full names the log of full-precision runs, but these flags '
                                         'train ternary runs'),
    (['--ternary', '--teacher', 't.pt', '--variant', 'ternary'], 'train distilled ternary runs: .*go to ternary-kd'),
])
def test_values_torch_would_trip_over_later_are_refused_here(argv, message):
    with pytest.raises(UserError, match=message):
        parse_flags(HYP, FLAGS, argv)


def test_a_default_variant_name_passes_where_it_fits():
    for argv, variant in ((['--variant', 'full'], 'full'), (['--ternary', '--variant', 'ternary'], 'ternary'),
                          (['--ternary', '--teacher', 't.pt', '--variant', 'ternary-kd'], 'ternary-kd'),
                          (['--ternary', '--variant', 'lr12'], 'lr12')):
        assert parse_flags(HYP, FLAGS, argv)[1].variant == variant


def test_flags_that_need_another_flag_pass_with_it_or_at_their_default():
    _, args = parse_flags(HYP, FLAGS, ['--ternary', '--ternary-acts', '8', '--ternary-per-channel'])
    assert args.ternary_acts == 8 and args.ternary_per_channel
    _, args = parse_flags(HYP, FLAGS, ['--kd-alpha', '0.5'])  # the default changes nothing
    assert args.kd_alpha == 0.5
    _, args = parse_flags(HYP, FLAGS, ['--ternary-per-channel'], defaults={'ternary': True})  # ternary94's default
    assert args.ternary_per_channel


def test_help_lists_allowed_values_the_no_forms_and_the_offline_need(capsys):
    import main8_compile
    with pytest.raises(SystemExit):
        parse_flags(main8_compile.hyp, main8_compile.FLAGS, ['--help'])
    text = ' '.join(capsys.readouterr().out.split())
    assert 'one of none, random, alternating' in text and 'one of 0, 1, 2' in text
    assert 'one of max-autotune, default, max-autotune-no-cudagraphs, reduce-overhead' in text
    assert '--no-warmup is --warmup=false' in text and '--no-ternary-keep-first' in text
    assert 'offline, this flag (or $CIFAR10_DIR) is needed' in text


def test_cifar10_dir_is_left_to_the_loader(monkeypatch):
    # so the loader's errors name the variable the path came from, not --data-dir
    monkeypatch.setenv('CIFAR10_DIR', '/nowhere')
    assert parse_flags(HYP, FLAGS, [])[1].data_dir is None
    assert parse_flags(HYP, FLAGS, ['--data-dir', '/here'])[1].data_dir == '/here'


def test_a_cuda_warning_is_one_note_before_the_table_and_not_repeated(monkeypatch, capsys):
    import warnings

    import torch
    message = 'CUDA initialization: Found no NVIDIA driver on your system.\n Please check ...'

    def warn_and_say_no():
        warnings.warn(message)
        return False
    monkeypatch.setattr(torch.cuda, 'is_available', warn_and_say_no)
    with warnings.catch_warnings():
        parse_flags(HYP, FLAGS, ['--device', 'cpu'])
        assert capsys.readouterr().out.startswith('note: CUDA initialization: Found no NVIDIA driver on your system. '
                                                  'Please check ...\n')
        with warnings.catch_warnings(record=True) as later:
            warnings.warn(message)  # e.g. from a CUDA query inside a run, in the middle of the epoch table
        assert later == []
