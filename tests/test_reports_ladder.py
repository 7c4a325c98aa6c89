"""ladder_problems on a small fixture ladder: clean, then each kind of problem on its own."""
import pytest

from reports.__main__ import main as reports_main
from reports.ladder import LADDER, ladder_problems


def rung_text(index):
    """Rung `index` of a clean fixture ladder: its header, a shared main(), one tagged helper per rung so far."""
    rung = LADDER[index]
    header = f'{rung.script} = {rung.parent} + {rung.tag}.' if rung.parent else f'{rung.script}: the base rung.'
    helpers = ''.join(f'\n\n# [{r.tag}] the {r.tag} feature\ndef use_{r.tag}(x):\n    return x + {i}\n'
                      for i, r in enumerate(LADDER[:index + 1]))
    return f'"""{header}\nRun: python {rung.script}\n"""\n\n\ndef main():\n    return 0\n' + helpers


@pytest.fixture
def ladder(tmp_path):
    for index, rung in enumerate(LADDER):
        (tmp_path / rung.script).write_text(rung_text(index))
    return tmp_path


def edit_last(ladder, old, new):
    """Edits main8_compile.py, and the same text in the rungs after it, which copy it forward: the edit shows in
    main8's step alone."""
    path = ladder / 'main8_compile.py'
    assert old in path.read_text()
    for rung in LADDER[[r.script for r in LADDER].index(path.name):]:
        later = ladder / rung.script
        later.write_text(later.read_text().replace(old, new, 1))


def test_a_clean_ladder_has_no_problems(ladder, capsys):
    assert ladder_problems(ladder) == []
    assert reports_main(['ladder', '--root', str(ladder)]) == 0
    # header and run lines changed (+2 -2), one helper added (+5: two blank lines, the tag, def, return)
    assert 'main8_compile.py     [compile]    +7   -2   torch.compile of the model' in capsys.readouterr().out


def test_a_step_adding_or_removing_over_80_lines_is_reported(ladder):
    edit_last(ladder, '    return x + 8\n', '    return x + 8\n' + '    x = x + 1\n' * 73)
    assert ladder_problems(ladder) == []  # 80 added lines: at the limit
    edit_last(ladder, '    x = x + 1\n', '    x = x + 1\n' + '    x = x + 1\n' * 7)
    assert ladder_problems(ladder) == ['main8_compile.py: 87 lines added to main7_mirror.py (+87 -2), more than 80']
    # each side is bounded on its own: a rung that takes the 80 lines out again (tagged) removes too many
    main9 = ladder / 'main9_muon.py'
    main9.write_text(main9.read_text().replace('    x = x + 1\n' * 80, '').replace(
        '    return x + 8\n', '    return x + 8  # [muon] without the x steps\n'))
    assert ladder_problems(ladder)[1:] == ['main9_muon.py: 83 lines removed from main8_compile.py (+8 -83), more '
                                           'than 80']


def test_a_step_without_its_tag_is_reported(ladder):
    edit_last(ladder, '# [compile] the', '# the')
    assert ladder_problems(ladder) == [
        'main8_compile.py: no added line has a "# [compile]" comment marking the feature',
        'main8_compile.py: use_compile is new but has no "# [compile]" comment (drift: tag the change or undo it)']


def test_a_drifted_helper_is_reported_and_a_tagged_change_is_not(ladder):
    edit_last(ladder, '    return x + 3\n', '    return x + 3.0\n')
    assert ladder_problems(ladder) == ['main8_compile.py: use_scalebias differs from main7_mirror.py\'s but has no '
                                       '"# [compile]" comment (drift: tag the change or undo it)']
    edit_last(ladder, '    return x + 3.0\n', '    return x + 3.0  # [compile] a float for the compiler\n')
    assert ladder_problems(ladder) == []


def test_a_bad_header_is_reported(ladder):
    edit_last(ladder, 'main8_compile.py = main7_mirror.py + compile.', 'main8: torch.compile.')
    [problem] = ladder_problems(ladder)
    assert problem.startswith('main8_compile.py: the docstring\'s first line should read like '
                              '"main8_compile.py = main7_mirror.py + ..."')


def test_identical_and_missing_rungs_are_reported(ladder):
    (ladder / 'main5_lookahead.py').unlink()
    (ladder / 'main8_compile.py').write_text(rung_text(7))
    problems = ladder_problems(ladder)
    assert problems[0] == f'main5_lookahead.py: missing from {ladder}'
    assert 'main8_compile.py: identical to main7_mirror.py; a step adds one feature' in problems
    assert not any(problem.startswith('main6_tta.py') for problem in problems)  # its parent is missing
    assert reports_main(['ladder', '--root', str(ladder)]) == 1


def test_standalone_scripts_are_optional_but_their_headers_are_checked(ladder):
    (ladder / 'train_resnet18.py').write_text('"""train_resnet18.py: the ResNet-18 baseline."""\n')
    (ladder / 'ternary94.py').write_text('"""ternary94.py: ternary weights."""\n')
    assert ladder_problems(ladder) == ['ternary94.py: the docstring\'s first line should read like '
                                       '"ternary94.py = main8_compile.py + ...", got "ternary94.py: ternary weights."']


SHARED_TAIL = '''
hyp = {
    'opt': {
        'epochs': 9.9,  # passes
        'lr': 11.5,     # per 1024 examples
    },
}
torch.backends.cudnn.benchmark = True

if __name__ == '__main__':
    main()
'''


@pytest.fixture
def ladder_with_hyp(ladder):
    """The fixture ladder where every rung also has the same hyp dict, module setting and __main__ block."""
    for rung in LADDER:
        path = ladder / rung.script
        path.write_text(path.read_text() + SHARED_TAIL)
    assert ladder_problems(ladder) == []
    return ladder


def test_a_changed_hyp_value_needs_the_tag_on_its_line(ladder_with_hyp):
    edit_last(ladder_with_hyp, "'lr': 11.5,     # per", "'lr': 12.0,     # per")
    assert ladder_problems(ladder_with_hyp) == [
        "main8_compile.py: hyp leaf opt.lr changed from main7_mirror.py's (11.5 -> 12.0) but its line has no "
        '"# [compile]" comment (drift: tag it or undo it)']
    edit_last(ladder_with_hyp, "# per 1024", "# [compile] retuned; per 1024")
    assert ladder_problems(ladder_with_hyp) == []


def test_epochs_may_change_untagged_but_a_new_leaf_may_not(ladder_with_hyp):
    edit_last(ladder_with_hyp, "'epochs': 9.9,", "'epochs': 8.0,")
    assert ladder_problems(ladder_with_hyp) == []
    edit_last(ladder_with_hyp, "        'lr': 11.5,", "        'mode': 'max',\n        'lr': 11.5,")
    assert ladder_problems(ladder_with_hyp) == [
        'main8_compile.py: hyp leaf opt.mode is new but its line has no "# [compile]" comment']
    edit_last(ladder_with_hyp, "'mode': 'max',", "'mode': 'max',  # [compile]")
    assert ladder_problems(ladder_with_hyp) == []


@pytest.mark.parametrize('old, new, name', [
    ("    main()\n", "    main()\n    print('done')\n", "if __name__ == '__main__'"),
    ('benchmark = True', 'benchmark = False', 'torch.backends.cudnn.benchmark'),
])
def test_drift_outside_functions_is_reported(ladder_with_hyp, old, new, name):
    edit_last(ladder_with_hyp, old, new)
    assert ladder_problems(ladder_with_hyp) == [
        f'main8_compile.py: {name} differs from main7_mirror.py\'s but has no "# [compile]" comment (drift: '
        'tag the change or undo it)']


@pytest.mark.parametrize('old, new, name', [
    ('benchmark = True\n', 'benchmark = True\ntorch.set_float32_matmul_precision("high")\n',
     "torch.set_float32_matmul_precision('high')"),
    ('benchmark = True\n', 'benchmark = True\ntorch.backends.cudnn.benchmark = False\n',
     'torch.backends.cudnn.benchmark (2)'),
    ('\n\ndef main():', '\n\nLIMIT = 3\n\n\ndef main():', 'LIMIT'),
])
def test_a_new_untagged_statement_is_reported(ladder_with_hyp, old, new, name):
    edit_last(ladder_with_hyp, old, new)
    assert ladder_problems(ladder_with_hyp) == [
        f'main8_compile.py: {name} is new but has no "# [compile]" comment (drift: tag the change or undo it)']
    edit_last(ladder_with_hyp, new, new.replace('\n', '  # [compile] why\n', 1 + new.count('\n') // 2)
              if name != 'LIMIT' else '\n\nLIMIT = 3  # [compile] why\n\n\ndef main():')
    assert ladder_problems(ladder_with_hyp) == []


def test_a_removed_statement_or_hyp_leaf_needs_a_tagged_comment_naming_it(ladder_with_hyp):
    edit_last(ladder_with_hyp, "        'lr': 11.5,     # per 1024 examples\n", '')
    edit_last(ladder_with_hyp, 'def use_network(x):\n    return x + 0\n', '')
    assert ladder_problems(ladder_with_hyp) == [
        'main8_compile.py: use_network of main7_mirror.py is gone, and no "# [compile]" comment names it (drift: '
        'say why in a tagged comment, or undo it)',
        'main8_compile.py: hyp leaf opt.lr of main7_mirror.py is gone, and no "# [compile]" comment names it '
        '(drift: say why in a tagged comment, or undo it)']
    edit_last(ladder_with_hyp, '# [compile] the compile feature',
              '# [compile] the compile feature; it replaces use_network, and lr is fixed')
    assert ladder_problems(ladder_with_hyp) == []
