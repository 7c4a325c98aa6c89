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
