"""The ladder: which rung extends which, and the checks that keep each step one feature wide (STYLE.md item 4).

ladder_problems(root) lists, as one line each:
  (a) a step whose diff from its parent is empty, adds more than MAX_CHANGED_LINES lines or removes more than
      MAX_CHANGED_LINES, each side counted apart: a feature that replaces an earlier one (main9's Muon replaces
      main5's lookahead) removes the old one's lines beside adding its own,
  (b) a rung whose module docstring's first line does not start with its own file name and name its parent
      ("main1_whiten.py = main0_network.py + ..."),
  (c) a step none of whose added lines holds a comment with the rung's tag, e.g. `# [whiten]`,
  (d) drift: a top-level statement that is new in the rung, or in both files with a different source, while
      its source in the rung (with the comment lines just above it) has no `# [tag]` comment of the rung; or a
      statement of the parent gone from the rung without a tagged comment in the rung that names it.
      Statements are matched by what they define: a function or class by name, an assignment by its target,
      an import by its module, `if __name__ == '__main__':` by its test, a bare expression (a call) by its
      source; a key that repeats is numbered. This is the simple form of "every changed line belongs to a
      tagged block": a tag anywhere in the changed statement clears it.
  (e) drift in the `hyp` dict, leaf by leaf: a leaf added, or whose value changed, needs the rung's tag on
      its own line; a leaf removed needs a tagged comment that names it. `epochs` is exempt: every rung
      retunes it to reach 94% sooner (the ladder's point).
  and a ladder rung whose file is missing. Standalone scripts are outside the diff chain; when present, their
  header is checked by (b); when missing, nothing is reported.
"""
import ast
import difflib
import re
from collections import Counter
from pathlib import Path
from typing import NamedTuple

from common.errors import UserError
from common.files import read_utf8

MAX_CHANGED_LINES = 80


class Rung(NamedTuple):
    script: str
    parent: str | None
    tag: str | None
    feature: str


LADDER = [
    Rung('main0_network.py', None, 'network',
         'the network, standard init, Nesterov SGD, flip + translate, mirror TTA'),
    Rung('main1_whiten.py', 'main0_network.py', 'whiten',
         'first conv initialised as a frozen whitening transform; its BatchNorm removed'),
    Rung('main2_dirac.py', 'main1_whiten.py', 'dirac', 'convs initialised as partial identity (dirac) transforms'),
    Rung('main3_scalebias.py', 'main2_dirac.py', 'scalebias', 'BatchNorm-bias learning rate scaled by 64'),
    Rung('main4_freeze.py', 'main3_scalebias.py', 'freeze', 'whitening-conv bias trained for 3 epochs, then frozen'),
    Rung('main5_lookahead.py', 'main4_freeze.py', 'lookahead',
         'lookahead/EMA of weights with fast BatchNorm momentum'),
    Rung('main6_tta.py', 'main5_lookahead.py', 'tta', 'multi-crop TTA: mirror plus 1-pixel translations'),
    Rung('main7_mirror.py', 'main6_tta.py', 'mirror', 'alternating (mirror) flip instead of random flip'),
    Rung('main8_compile.py', 'main7_mirror.py', 'compile', 'torch.compile of the model'),
    Rung('main9_muon.py', 'main8_compile.py', 'muon', 'Muon for the 3x3 convs, retuned as airbench94_muon'),
]
# In the README table, outside the diff chain; may be absent.
STANDALONE = [
    Rung('train_resnet18.py', None, None, 'ResNet-18 baseline tuned for time-to-94%'),
    Rung('ternary94.py', 'main8_compile.py', 'ternary94', 'ternary weights tuned to reach 94%'),
]
# Every script in ladder order, then the standalone ones: the README table's row order and the tests' list.
SCRIPTS = [rung.script for rung in LADDER + STANDALONE]


def find_rung(script):
    return next((rung for rung in LADDER + STANDALONE if rung.script == script), None)


def changed_lines(old_text, new_text):
    """(added, removed) lines of the unified diff from old_text to new_text."""
    # No context lines (n=0), so every '+' or '-' line is a change; [2:] drops the '---' and '+++' file headers.
    diff = list(difflib.unified_diff(old_text.splitlines(), new_text.splitlines(), lineterm='', n=0))[2:]
    added = [line[1:] for line in diff if line.startswith('+')]
    removed = [line[1:] for line in diff if line.startswith('-')]
    return added, removed


def tag_comment(tag):
    """A comment carrying the tag, from the tag to the end of the line."""
    return re.compile(r'#.*\[' + re.escape(tag) + r'\].*')


def has_tag_comment(lines, tag):
    pattern = tag_comment(tag)
    return any(pattern.search(line) for line in lines)


def header_problem(rung, text):
    """(b): the docstring's first line names the file itself, then its parent."""
    docstring = ast.get_docstring(ast.parse(text)) or ''
    first = docstring.strip().splitlines()[0] if docstring.strip() else ''
    if first.startswith(rung.script) and (rung.parent is None or rung.parent in first):
        return None
    wanted = f'"{rung.script} = {rung.parent} + ..."' if rung.parent else f'"{rung.script}: ..."'
    return f'{rung.script}: the docstring\'s first line should read like {wanted}, got "{first}"'


def statement_key(node):
    """What a top-level statement defines, to match it across two rungs; None for the `hyp` dict (compared
    leaf by leaf) and for a string constant (the docstring, checked by (b))."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return node.name
    if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        key = ', '.join(ast.unparse(target) for target in targets)
        return None if key == 'hyp' else key
    if isinstance(node, ast.Import):
        return 'import ' + ', '.join(alias.name for alias in node.names)
    if isinstance(node, ast.ImportFrom):
        return f'from {node.module} import'
    if isinstance(node, ast.If):
        return f'if {ast.unparse(node.test)}'
    if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
        return None
    return ast.unparse(node).splitlines()[0]


def top_level_sources(text):
    """{key: source} of the module's top-level statements (see statement_key), each with its decorators and
    the comment lines directly above it (where a `# [tag]` block comment sits)."""
    lines = text.splitlines()
    sources, seen = {}, Counter()
    for node in ast.parse(text).body:
        key = statement_key(node)
        if key is None:
            continue
        start = min([node.lineno] + [d.lineno for d in getattr(node, 'decorator_list', [])]) - 1
        while start > 0 and lines[start - 1].lstrip().startswith('#'):
            start -= 1
        seen[key] += 1
        sources[key if seen[key] == 1 else f'{key} ({seen[key]})'] = '\n'.join(lines[start:node.end_lineno])
    return sources


# Leaves every rung may retune without a tag: each feature lets the rung reach 94% in fewer epochs.
RETUNED_EVERY_STEP = {'epochs'}


def hyp_leaves(text):
    """{leaf path: (value source, line)} of the module-level `hyp = {...}` dict literal; {} when absent."""
    lines = text.splitlines()
    for node in ast.parse(text).body:
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ['hyp'] \
                and isinstance(node.value, ast.Dict):
            return dict(dict_leaves(node.value, (), lines))
    return {}


def dict_leaves(node, path, lines):
    for key, value in zip(node.keys, node.values):
        leaf_path = path + (ast.unparse(key),)
        if isinstance(value, ast.Dict):
            yield from dict_leaves(value, leaf_path, lines)
        else:
            yield leaf_path, (ast.unparse(value), '\n'.join(lines[key.lineno - 1:value.end_lineno]))


def leaf_name(path):
    """(\"'opt'\", \"'lr'\") -> 'opt.lr'"""
    return '.'.join(p.strip("'\"") for p in path)


def hyp_drift_problems(rung, parent_text, text):
    """(e): hyp leaves added or changed from the parent without the rung's tag on their line."""
    old, new = hyp_leaves(parent_text), hyp_leaves(text)
    if not old:  # no hyp in the parent: the whole dict is new, like any other new statement
        return []
    problems = []
    for path, (value, line) in new.items():
        name = leaf_name(path)
        if name.rpartition('.')[2] in RETUNED_EVERY_STEP or has_tag_comment([line], rung.tag):
            continue
        if path not in old:
            problems.append(f'{rung.script}: hyp leaf {name} is new but its line has no "# [{rung.tag}]" comment')
        elif old[path][0] != value:
            problems.append(f'{rung.script}: hyp leaf {name} changed from {rung.parent}\'s ({old[path][0]} -> '
                            f'{value}) but its line has no "# [{rung.tag}]" comment (drift: tag it or undo it)')
    for path in old:
        name = leaf_name(path)
        if path not in new and not names_in_tagged_comment(text, rung.tag, name.rpartition('.')[2]):
            problems.append(f'{rung.script}: hyp leaf {name} of {rung.parent} is gone, and no "# [{rung.tag}]" '
                            'comment names it (drift: say why in a tagged comment, or undo it)')
    return problems


def names_in_tagged_comment(text, tag, name):
    """Whether a comment carrying the tag mentions `name`: where a rung says what its feature removed."""
    word = re.compile(r'\b' + re.escape(name) + r'\b')
    return any(word.search(match.group(0)) for match in tag_comment(tag).finditer(text))


def drift_problems(rung, parent_text, text):
    """(d) and (e): statements and hyp leaves changed from the parent without the rung's tag."""
    old, new = top_level_sources(parent_text), top_level_sources(text)
    problems = []
    for name, source in new.items():
        if old.get(name) == source or has_tag_comment(source.splitlines(), rung.tag):
            continue
        how = 'differs from ' + rung.parent + "'s" if name in old else 'is new'
        problems.append(f'{rung.script}: {name} {how} but has no "# [{rung.tag}]" comment (drift: tag the change '
                        'or undo it)')
    problems += [f'{rung.script}: {name} of {rung.parent} is gone, and no "# [{rung.tag}]" comment names it '
                 '(drift: say why in a tagged comment, or undo it)'
                 for name in old if name not in new and not names_in_tagged_comment(text, rung.tag, name)]
    return problems + hyp_drift_problems(rung, parent_text, text)


def step_problems(rung, parent_text, text):
    """(a), (c) and (d) for one step of the ladder."""
    added, removed = changed_lines(parent_text, text)
    if not added and not removed:
        return [f'{rung.script}: identical to {rung.parent}; a step adds one feature']
    problems = []
    for lines, verb in ((added, 'added to'), (removed, 'removed from')):  # each side bounded on its own, see (a)
        if len(lines) > MAX_CHANGED_LINES:
            problems.append(f'{rung.script}: {len(lines)} lines {verb} {rung.parent} (+{len(added)} '
                            f'-{len(removed)}), more than {MAX_CHANGED_LINES}')
    if not has_tag_comment(added, rung.tag):
        problems.append(f'{rung.script}: no added line has a "# [{rung.tag}]" comment marking the feature')
    return problems + drift_problems(rung, parent_text, text)


def check_root(root):
    """One line for a --root that cannot hold the ladder: not a problem per missing rung, nor a traceback for a
    rung file that is not UTF-8 text."""
    root = Path(root)
    if not root.is_dir():
        raise UserError(f'--root {root} is not a folder: pass the folder holding the rung scripts '
                        f'({LADDER[0].script} ...)')
    present = [root / rung.script for rung in LADDER + STANDALONE if (root / rung.script).is_file()]
    if not present:
        raise UserError(f'--root {root} holds none of the rung scripts ({LADDER[0].script} to {LADDER[-1].script}): '
                        'pass the folder holding them')
    for path in present:
        read_utf8(path, 'save it as UTF-8')


def read_sources(root, rungs):
    """{script: text} of the rungs present under root."""
    return {rung.script: (Path(root) / rung.script).read_text() for rung in rungs
            if (Path(root) / rung.script).is_file()}


def ladder_problems(root):
    """Every problem of the ladder under `root`, one line each; [] when the ladder is clean."""
    texts = read_sources(root, LADDER + STANDALONE)
    problems = [f'{rung.script}: missing from {root}' for rung in LADDER if rung.script not in texts]
    for rung in LADDER + STANDALONE:
        if rung.script not in texts:
            continue
        try:
            problem = header_problem(rung, texts[rung.script])
            if problem:
                problems.append(problem)
            if rung in LADDER and rung.parent in texts:
                problems += step_problems(rung, texts[rung.parent], texts[rung.script])
        except SyntaxError as exc:
            problems.append(f'{rung.script}: not valid Python ({exc.msg}, line {exc.lineno})')
    return problems


def ladder_steps(root):
    """(rung, lines added, lines removed) for each step whose two files are present."""
    texts = read_sources(root, LADDER)
    return [(rung, *map(len, changed_lines(texts[rung.parent], texts[rung.script]))) for rung in LADDER[1:]
            if rung.script in texts and rung.parent in texts]
