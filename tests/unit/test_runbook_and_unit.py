"""The day-2 material tells the truth: docs/RUNBOOK.md names only commands and flags the CLI
has, and every runbook has its four parts; config/statesync-master.toml loads with statesync's
own loader and names the roots the unit file opens; config/statesync.service parses (and passes
`systemd-analyze verify` where that exists) and carries its hardening."""
from __future__ import annotations

import argparse
import configparser
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from statesync import config
from statesync.cli.parsers import build_parser
from statesync.errors import ConfigError

from ..cli_runner import run_cli
from ..support import clean_env

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "RUNBOOK.md"
UNIT = ROOT / "config" / "statesync.service"
SAMPLE = ROOT / "config" / "statesync-master.toml"
README = ROOT / "README.md"

RUNBOOKS = [
    "Master rebuilt",
    "Master moved to a new host name",
    "The sidecar refused a new CA",
    "Encryption key lost",
    "Consul lost",
    "Satellite purged by mistake",
    "Upgrading statesync",
    "Rotating the encryption key",
    "Consul was restarted",
    "A satellite's registration is refused",
]
PARTS = [("Symptoms",), ("Commands",), ("What they print", "Output"), ("Check",)]
SECRETS = ("consul-token", "statesync.key", "icinga-api-password")


# -- the sample config ---------------------------------------------------------------------

def _sample_with_secrets(tmp_path: Path) -> Path:
    """The sample, its /etc/statesync/ files made in tmp_path (a real key from statesync keygen)."""
    secrets = tmp_path / "etc-statesync"
    secrets.mkdir()
    key = secrets / "statesync.key"
    proc = run_cli("keygen", "--out", str(key), env=clean_env())
    assert proc.returncode == 0, proc.stderr
    (secrets / "consul-token").write_text("11111111-2222-3333-4444-555555555555\n")
    (secrets / "icinga-api-password").write_text("api-password\n")
    text = SAMPLE.read_text()
    for name in SECRETS:
        assert f"/etc/statesync/{name}" in text, f"the sample should name /etc/statesync/{name}"
    copy = tmp_path / "statesync.toml"
    copy.write_text(text.replace("/etc/statesync/", f"{secrets}/"))
    return copy


def test_the_master_sample_config_loads_and_names_both_icinga_directories(tmp_path):
    cfg = config.load(config_file=str(_sample_with_secrets(tmp_path)), env={})
    assert cfg.root == Path("/srv/icinga2")
    assert dict(cfg.roots) == {"state": "var/lib/icinga2", "config": "etc/icinga2"}
    assert cfg.state_dir == Path("/srv/icinga2/var/lib/icinga2")
    assert (cfg.node, cfg.role, cfg.on_conflict) == ("master1", "master", "refuse")
    assert cfg.ready_file == Path("/run/statesync/ready")
    assert cfg.sealing.sealer is not None, "the sample must seal secrets with a key"
    # the secrets of both subtrees are sealed: the CA key and the TicketSalt
    for secret in ("var/lib/icinga2/ca/ca.key", "etc/icinga2/constants.conf", "etc/icinga2/conf.d/api-users.conf"):
        assert cfg.sealing.wants(secret, b"not a PEM key"), secret
    assert not cfg.sealing.wants("etc/icinga2/zones.conf", b"object Zone")
    assert cfg.enrol.enabled and cfg.enrol.api_password == "api-password"
    assert cfg.http_port == 9465


def test_the_master_sample_without_its_secret_files_names_the_missing_one(tmp_path):
    text = SAMPLE.read_text().replace("/etc/statesync/", f"{tmp_path}/absent/")
    (tmp_path / "s.toml").write_text(text)
    with pytest.raises(ConfigError, match=r"cannot read \S*/absent/(consul-token|statesync\.key|icinga-api-password)"):
        config.load(config_file=str(tmp_path / "s.toml"), env={})


# -- the unit file -------------------------------------------------------------------------

def _unit() -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None, delimiters=("=",),
                                       comment_prefixes=("#", ";"), empty_lines_in_values=False)
    parser.optionxform = str  # systemd's keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_the_unit_file_parses_and_is_hardened():
    unit = _unit()
    assert set(unit.sections()) == {"Unit", "Service", "Install"}
    s = unit["Service"]
    expected = {
        "ProtectSystem": "strict", "NoNewPrivileges": "yes", "PrivateTmp": "yes", "ProtectHome": "yes",
        "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes", "ProtectKernelLogs": "yes",
        "ProtectControlGroups": "yes", "Restart": "on-failure", "User": "root", "Type": "simple",
        "RuntimeDirectory": "statesync",
    }
    for key, value in expected.items():
        assert s.get(key) == value, f"[Service] {key}= should be {value}, is {s.get(key)!r}"
    assert set(s["RestrictAddressFamilies"].split()) == {"AF_UNIX", "AF_INET", "AF_INET6"}
    assert set(s["CapabilityBoundingSet"].split()) == {"CAP_CHOWN", "CAP_FOWNER", "CAP_DAC_OVERRIDE",
                                                       "CAP_DAC_READ_SEARCH", "CAP_FSETID"}
    assert "icinga2.service" in unit["Unit"]["Before"].split()
    assert unit["Install"]["WantedBy"] == "multi-user.target"


def test_the_unit_runs_the_master_sidecar_and_waits_for_the_start_up_restore(tmp_path):
    s = _unit()["Service"]
    run = shlex.split(s["ExecStart"])
    ready = shlex.split(s["ExecStartPost"])
    assert run[0] == ready[0] and run[0].endswith("/statesync")
    args = build_parser().parse_args(run[1:])
    assert (args.command, args.role, args.config) == ("run", "master", "/etc/statesync/statesync.toml")
    args = build_parser().parse_args(ready[1:])
    assert args.command == "ready" and args.wait > 0 and args.config == "/etc/statesync/statesync.toml"
    assert float(s["TimeoutStartSec"]) > args.wait, "TimeoutStartSec must outlast the readiness wait"
    # what the unit opens for writing is the sample's root, and the marker is in its RuntimeDirectory
    cfg = config.load(config_file=str(_sample_with_secrets(tmp_path)), env={})
    assert s["ReadWritePaths"].split() == [str(cfg.root)]
    assert cfg.ready_file.parent == Path("/run") / s["RuntimeDirectory"]
    # the icinga2.service drop-in the comments give waits for the same marker
    drop_in = UNIT.read_text()
    assert f"Environment=STATESYNC_READY_FILE={cfg.ready_file}" in drop_in
    m = re.search(r"^#\s+ExecStartPre=(\S+ ready --wait \d+)\s*$", drop_in, re.M)
    assert m, "the comments should give icinga2.service's ExecStartPre"
    assert build_parser().parse_args(shlex.split(m.group(1))[1:]).command == "ready"


def test_systemd_analyze_verify_accepts_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    statesync = Path(sys.executable).parent / "statesync"
    if analyze is None or not statesync.exists():
        # no systemd here: the parse tests above are what checks the file
        _unit()
        return
    text = UNIT.read_text().replace("/opt/statesync/bin/statesync", str(statesync))
    (tmp_path / "statesync.service").write_text(text)
    proc = subprocess.run([analyze, "verify", "--man=no", "./statesync.service"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and not proc.stderr.strip(), proc.stderr  # unknown keys only warn


# -- the runbooks --------------------------------------------------------------------------

def _subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def _code(text: str) -> list[str]:
    """Every fenced block and inline code span of ``text``."""
    fenced = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.M | re.S)
    inline = re.findall(r"`([^`\n]+)`", re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.M | re.S))
    return fenced + inline


_INVOCATION = re.compile(r"(?:^|(?<=[\s$(/=]))statesync[ \t]+([a-z][a-z-]*)([^\n|;&>)]*)")


def test_every_statesync_command_and_flag_in_the_runbook_exists():
    commands = _subcommands()
    seen = set()
    for block in _code(RUNBOOK.read_text()):
        for line in block.splitlines():
            if line.lstrip().startswith(("statesync: error", "#")):
                continue
            line = re.sub(r"systemctl\s+[a-z-]+(\s+(--\S+|statesync|icinga2))+", "", line)  # the unit, not the CLI
            for name, rest in _INVOCATION.findall(line):
                assert name in commands, f"docs/RUNBOOK.md names `statesync {name}`, which the CLI lacks: {line!r}"
                seen.add(name)
                known = commands[name]._option_string_actions
                for flag in re.findall(r"(?<![\w-])(--[a-z][a-z-]*)", rest):
                    assert flag in known, f"`statesync {name}` has no {flag}: {line!r}"
    # the operator commands the runbooks are about
    assert {"nodes", "restore", "check-ca", "accept-ca", "keygen", "rekey", "verify", "backup", "ready",
            "snapshots", "diff", "ls"} <= seen, seen


def test_every_runbook_has_symptoms_commands_output_and_check():
    text = RUNBOOK.read_text()
    sections = re.split(r"^## ", text, flags=re.M)[1:]
    titles = {s.splitlines()[0].strip(): s for s in sections}
    for want in RUNBOOKS:
        found = [t for t in titles if re.sub(r"^\d+\.\s*", "", t).startswith(want)]
        assert found, f"docs/RUNBOOK.md lacks the runbook {want!r}; it has {list(titles)}"
        body = titles[found[0]]
        heads = [h.strip() for h in re.findall(r"^### (.+)$", body, re.M)]
        for alternatives in PARTS:
            assert any(h.startswith(alternatives) for h in heads), f"{want}: no ### {alternatives[0]} part ({heads})"
        assert body.count("```") >= 4, f"{want}: a block of commands and one of their output, at least"


def test_the_readme_day_2_section_points_to_every_runbook():
    text = README.read_text()
    assert "## Day 2" in text and text.index("## Day 2") < text.index("## Configuration")
    day2 = " ".join(text[text.index("## Day 2"):text.index("## Configuration")].split())  # lines rewrap
    for want in RUNBOOKS:
        assert want.lower() in day2.lower(), f"README's Day 2 section should name the runbook {want!r}"
    for ref in ("docs/RUNBOOK.md", "docs/ENROL.md", "docs/JSON.md", "config/statesync.service",
                "config/statesync-master.toml"):
        assert ref in day2, ref
    for command in ("verify", "diff", "ls", "nodes", "satellites", "check-ca"):
        assert f"statesync {command}" in day2, command
