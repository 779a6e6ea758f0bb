"""The command line imports a command's module only when that command runs (statesync/cli/main.py):
the container's health probe starts a process every few seconds, and pays for its own imports only."""
from __future__ import annotations

import subprocess
import sys

import pytest

from statesync.cli import main
from statesync.cli.parsers import build_parser

from ..support import REPO


def _subcommands() -> set[str]:
    parser = build_parser()
    actions = [a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction"]
    return set(actions[0].choices)


def test_every_command_of_the_parser_has_a_module_and_no_module_names_a_command_the_parser_lacks():
    assert set(main.COMMANDS) == _subcommands()


@pytest.mark.parametrize("name", sorted(main.COMMANDS))
def test_every_command_resolves_to_its_function(name):
    function = main.command_function(name)
    assert callable(function) and function.__name__ == "cmd_" + name.replace("-", "_")


def test_importing_the_command_line_imports_no_command_and_the_health_probe_only_its_own():
    probe = ("import sys, statesync.cli.main as m; before = {k for k in sys.modules if k.startswith('statesync.cli.')}; "
             "m.command_function('health'); after = {k for k in sys.modules if k.startswith('statesync.cli.')}; "
             "print(sorted(before)); print(sorted(after - before)); "
             "print(sorted(k for k in sys.modules if k.startswith(('statesync.sidecar.daemon', 'statesync.repo.backup',"
             " 'statesync.enrol.acceptor', 'statesync.restore.apply'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO,
                         ).stdout.splitlines()
    assert out[0] == "['statesync.cli.main', 'statesync.cli.parsers']"
    assert out[1] == "['statesync.cli.health']"
    assert out[2] == "[]", "the health probe imported a command's machinery"


def test_a_restore_imports_neither_requests_nor_x509_and_the_consul_package_still_serves_its_names():
    # python-consul2's __init__ imports its requests-based client, which statesync never uses;
    # x509 is needed only where a commit names its CA (sidecar/wiring.ca_identity).
    probe = ("import sys, statesync.cli.main as m; m.command_function('restore'); "
             "print(sorted(k for k in ('requests', 'urllib3', 'consul.std', 'cryptography.x509') if k in sys.modules)); "
             "import consul; print(consul.Consul.__module__, consul.ConsulException.__module__, consul.base.Check.__name__)")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=REPO,
                         ).stdout.splitlines()
    assert out == ["[]", "consul.std consul.base Check"]
