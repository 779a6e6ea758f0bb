"""An HA master zone of real Icinga 2 nodes for tests/e2e/test_ha_zone.py (docs/HA.md, "An HA
master zone"), built as Icinga's distributed-monitoring chapter builds one:

- the first master runs ``node setup --master``: it holds the CA (``ca/``) and the zone's config;
- the second master runs ``node setup`` against the first with a ticket the first computed
  (``pki ticket``): a certificate signed by the CA, ``certs/ca.crt``, no ``ca/`` at all; it has
  ``accept_config`` and receives the zone's config (the accepted satellites' package among it)
  through Icinga's config sync;
- both get the same zones.conf: both Endpoints, with host and port, in Zone "master";
- a satellite's parent zone lists both masters (``node setup --endpoint`` twice), so it
  connects to both.

Each node is a tests/icinga.py ``Node`` (its own mount namespace); each master has its own
``statesync run --role master`` sidecar with its own node name on its own root, set up alike.
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

from .icinga import ENROL_PERMISSIONS, LIB, Node

ZONE = "master"


def zones_conf(masters: list[Node]) -> str:
    """The zones.conf both masters get: both Endpoints (each connects to the other) in one zone."""
    text = "// The HA master zone: the same file on both masters.\n"
    for m in masters:
        text += f'\nobject Endpoint "{m.cn}" {{\n\thost = "127.0.0.1"\n\tport = {m.api_port}\n}}\n'
    names = ", ".join(f'"{m.cn}"' for m in masters)
    text += f'\nobject Zone "{ZONE}" {{\n\tendpoints = [ {names} ]\n}}\n'
    text += '\nobject Zone "global-templates" {\n\tglobal = true\n}\n\nobject Zone "director-global" {\n\tglobal = true\n}\n'
    return text


def _api_users(node: Node, api_user: str, api_password: str, enrol_password: str) -> None:
    perms = ", ".join(f'"{p}"' for p in ENROL_PERMISSIONS)
    (node.etc / "conf.d").mkdir(exist_ok=True)
    (node.etc / "conf.d/api-users.conf").write_text(
        f'object ApiUser "{api_user}" {{\n  password = "{api_password}"\n  permissions = [ "*" ]\n}}\n'
        f'\nobject ApiUser "statesync" {{\n  password = "{enrol_password}"\n  permissions = [ {perms} ]\n}}\n')
    conf = node.etc / "icinga2.conf"
    if 'include "conf.d/api-users.conf"' not in conf.read_text():  # node setup adds it on a master only
        with open(conf, "a") as fh:
            fh.write('\ninclude "conf.d/api-users.conf"\n')


def provision_first_master(master: Node, masters: list[Node], api_user: str, api_password: str,
                           enrol_password: str) -> None:
    """The CA master's entrypoint: ``node setup --master`` (which keeps a CA it finds in lib/), then
    the zone's zones.conf and the API users (config management's part)."""
    master.make_dirs()
    master.icinga2("node", "setup", "--master", "--cn", master.cn, "--zone", ZONE, "--disable-confd")
    _finish(master, masters, api_user, api_password, enrol_password)


def ticket_for(first: Node, cn: str) -> str:
    """``icinga2 pki ticket`` on the CA master, with its TicketSalt: what its operator hands out."""
    constants = (first.etc / "constants.conf").read_text()
    salt = next(line.split('"')[1] for line in constants.splitlines() if line.startswith("const TicketSalt"))
    return first.icinga2("pki", "ticket", "--cn", cn, "--salt", salt).stdout.strip()


def provision_second_master(second: Node, first: Node, masters: list[Node], api_user: str, api_password: str,
                            enrol_password: str) -> None:
    """The second master's first start: ``node setup`` against the running first master with a ticket
    (its certificate signed there at once), ``accept_config`` on; then the zone's zones.conf. Its
    /etc/icinga2 is kept as config management keeps it (``saved_config``): node setup would make a
    new key, so a rebuilt second master gets its configuration, not another setup."""
    shutil.rmtree(second.etc, ignore_errors=True)
    second.make_dirs()
    _certs_dir(second)
    trusted = f"{LIB}/certs/trusted-parent.crt"
    parent = f"127.0.0.1,{first.api_port}"
    second.icinga2("pki", "save-cert", "--host", "127.0.0.1", "--port", str(first.api_port), "--trustedcert", trusted)
    second.icinga2("node", "setup", "--cn", second.cn, "--zone", ZONE, "--endpoint", f"{first.cn},{parent}",
                   "--parent_host", parent, "--parent_zone", ZONE, "--trustedcert", trusted,
                   "--ticket", ticket_for(first, second.cn), "--accept-config", "--accept-commands",
                   "--disable-confd")
    _finish(second, masters, api_user, api_password, enrol_password)
    second.save_config()


def restore_config(node: Node) -> None:
    """A rebuilt node's entrypoint when its certificate is back: its configuration, no setup."""
    shutil.rmtree(node.etc, ignore_errors=True)
    node.make_dirs(etc_from=node.saved_config)


def pending_satellite(sat: Node, masters: list[Node], parent: Node) -> None:
    """A satellite's first start without a ticket, its parent zone listing both masters: ``node
    setup`` asks ``parent`` (a new key, a self-signed certificate, the request pending)."""
    shutil.rmtree(sat.etc, ignore_errors=True)
    sat.make_dirs()
    _certs_dir(sat)
    trusted = f"{LIB}/certs/trusted-parent.crt"
    sat.icinga2("pki", "save-cert", "--host", "127.0.0.1", "--port", str(parent.api_port), "--trustedcert", trusted)
    endpoints = [arg for m in masters for arg in ("--endpoint", f"{m.cn},127.0.0.1,{m.api_port}")]
    sat.icinga2("node", "setup", "--cn", sat.cn, *endpoints, "--zone", sat.zone, "--parent_zone", ZONE,
                "--parent_host", f"127.0.0.1,{parent.api_port}", "--trustedcert", trusted,
                "--accept-config", "--accept-commands", "--disable-confd")
    sat.patch_api_listener()
    _chown(sat.etc)
    sat.save_config()


def zone_endpoints(node: Node) -> str:
    """The satellite's or master's zones.conf text (what node setup wrote)."""
    return (node.etc / "zones.conf").read_text()


def synced_package(node: Node) -> str:
    """The accepted satellites' package as Icinga's config sync wrote it on a master that did not stage it."""
    path = node.lib / "api/zones" / ZONE / "statesync-satellites"
    return "\n".join(p.read_text() for p in sorted(path.rglob("*.conf"))) if path.is_dir() else ""


def _finish(node: Node, masters: list[Node], api_user: str, api_password: str, enrol_password: str) -> None:
    (node.etc / "zones.conf").write_text(zones_conf(masters))
    node.patch_api_listener()
    _api_users(node, api_user, api_password, enrol_password)
    _chown(node.etc)


def _certs_dir(node: Node) -> None:
    certs = node.lib / "certs"
    certs.mkdir(exist_ok=True)
    nagios = pwd.getpwnam("nagios")
    os.chown(certs, nagios.pw_uid, nagios.pw_gid)


def _chown(path: Path) -> None:
    subprocess.run(["chown", "-R", "nagios:nagios", str(path)], check=True)

