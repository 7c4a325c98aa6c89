"""The project's own promises about itself: CI runs exactly the README's test command."""
from conftest import ROOT


def readme_command(comment):
    for line in (ROOT / 'README.md').read_text().splitlines():
        if line.rstrip().endswith(comment):
            return line.split('#')[0].strip()
    raise AssertionError(f'no README line ends with {comment!r}')


def test_ci_runs_the_readme_test_command():
    command = readme_command('# set up and run the tests (CPU)')
    assert command.startswith('pip install -r requirements.txt') and 'pytest' in command
    assert command in (ROOT / '.ci' / 'run').read_text().splitlines()


def imported_packages(path):
    """The top-level names a file imports (at any depth: the lazy imports inside functions count too)."""
    import ast
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name.split('.')[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module.split('.')[0])
    return names


PACKAGES = ('common', 'airbench', 'ternary', 'stats', 'reports')
# What each package may import of the others: common is the bottom; the loader and ternary stand beside each other
# (their benchmarks append rows through stats.bench); reports sit on top and never load into a run.
MAY_IMPORT = {'common': set(), 'stats': {'common'}, 'airbench': {'common', 'stats'},
              'ternary': {'common', 'stats'}, 'reports': {'common', 'stats', 'airbench'}}


def test_packages_import_downward_only():
    """No circle between packages; a rung uses stats.Trial and no report."""
    from reports.ladder import SCRIPTS
    for package, allowed in MAY_IMPORT.items():
        for path in sorted((ROOT / package).glob('*.py')):
            others = imported_packages(path) & set(PACKAGES) - {package}
            assert others <= allowed, f'{path.relative_to(ROOT)} imports {others - allowed}'
    for script in SCRIPTS:
        assert 'reports' not in imported_packages(ROOT / script), script


def test_the_reports_command_line_starts_without_torch():
    """`python -m reports table --check` runs in CI and on laptops: reading logs must not pay torch's import."""
    import subprocess
    import sys
    code = 'import sys, reports.__main__; sys.exit("torch" in sys.modules)'
    assert subprocess.run([sys.executable, '-c', code], cwd=ROOT).returncode == 0
