"""ternary/: imports go one way, quant -> pack -> kernels -> layers -> export -> distill.

A module may import only the modules before it in that order, at the top or inside a function alike, and an
import inside a function must not dodge a cycle: the only ones allowed are of kernels, by layers.py and bench.py,
because Triton is optional. flags.py may import layers and export; bench.py and __init__.py sit on top.
"""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'ternary'
ORDER = ['quant', 'pack', 'kernels', 'layers', 'export', 'distill']
ALLOWED = {name: set(ORDER[:i]) for i, name in enumerate(ORDER)} | {
    'flags': {'layers', 'export'},
    'bench': {'quant', 'pack', 'kernels'},
    '__init__': set(ORDER) | {'flags'},
}
# (importer, imported) pairs that may import inside a function: Triton is optional
LAZY = {('layers', 'kernels'), ('bench', 'kernels')}


def imported_names(node):
    """The dotted names an import statement brings in: `from a import b` is a.b if that is a module, else a."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = 'ternary' + (f'.{node.module}' if node.module else '') if node.level else node.module
    return [f'{base}.{alias.name}' if resolve(f'{base}.{alias.name}') != '__init__' else base
            for alias in node.names]


def resolve(name):
    """ternary/x.py for `ternary.x` and the names in it; '__init__' for the package itself and its names."""
    parts = name.split('.')
    return parts[1] if len(parts) >= 2 and (PACKAGE / f'{parts[1]}.py').exists() else '__init__'


def ternary_imports(tree):
    """(module, inside a function) for each ternary module the tree imports."""
    in_functions = {id(node) for function in ast.walk(tree)
                    if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)) for node in ast.walk(function)}
    return [(resolve(name), id(node) in in_functions) for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for name in imported_names(node) if name == 'ternary' or name.startswith('ternary.')]


def modules():
    return sorted(path.stem for path in PACKAGE.glob('*.py'))


def test_every_module_has_a_place_in_the_order():
    assert set(modules()) <= set(ALLOWED), f'place {set(modules()) - set(ALLOWED)} in ORDER or ALLOWED'


@pytest.mark.parametrize('module', modules())
def test_imports_go_one_way(module):
    tree = ast.parse((PACKAGE / f'{module}.py').read_text())
    for imported, lazy in ternary_imports(tree):
        assert imported in ALLOWED[module], (f'ternary/{module}.py imports ternary/{imported}.py, which comes at '
                                             f'or after it in {" -> ".join(ORDER)}')
        assert not lazy or (module, imported) in LAZY, (f'ternary/{module}.py imports ternary/{imported}.py inside '
                                                        f'a function: import it at the top')


def test_the_check_sees_every_kind_of_import():
    source = ('import ternary.kernels\nfrom ternary import pack, convert\nfrom .export import unwrap\n'
              'def f():\n    from ternary.distill import save_model\n')
    assert sorted(ternary_imports(ast.parse(source))) == [('__init__', False), ('distill', True), ('export', False),
                                                          ('kernels', False), ('pack', False)]
