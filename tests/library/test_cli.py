"""The ``jicd`` dispatcher: every sub-command is wired, unknown ones are one-line errors."""

from __future__ import annotations

import importlib

import pytest

from jicd.__main__ import COMMANDS, main


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_resolves_to_a_main_function(name: str) -> None:
    module_name, func_name = COMMANDS[name][0].split(":")
    assert callable(getattr(importlib.import_module(module_name), func_name))


def test_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trian"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'trian'" in err and "train" in err


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
