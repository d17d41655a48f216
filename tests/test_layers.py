"""The layering is checked, not hoped for: the import-linter contracts in pyproject.toml
(store < core < web < faces < service < cli, faces through the Volume API, the few
exceptions named there) must all hold."""

from pathlib import Path

from importlinter import cli

import razordav

ROOT = Path(__file__).resolve().parents[1]


def test_the_import_contracts_hold(capsys):
    # the package under test is this tree's (tests import it first), not an installed one
    assert Path(razordav.__file__).resolve().is_relative_to(ROOT)
    status = cli.lint_imports(config_filename=str(ROOT / "pyproject.toml"), no_cache=True,
                              no_logo=True)
    assert status == 0, capsys.readouterr().out
