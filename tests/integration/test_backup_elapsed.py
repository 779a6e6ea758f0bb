"""The time `statesync backup` reports is the whole backup's: the scan and the upload overlapping
it are most of a backup, and the commit's own time (all it reported once) leaves them out."""
from __future__ import annotations

import os
import re
import time

import pytest
import structlog

from statesync.cli import main as cli
from statesync.tree import scan as scan_module

from ..support import clean_env, make_tree


@pytest.mark.consul
def test_backup_reports_the_time_of_the_whole_backup_not_of_its_commit_alone(consul, prefix, tmp_path,
                                                                              monkeypatch, capsys):
    # The scan (and the upload overlapping it) is most of a backup; a slow scan must show.
    root = tmp_path / "root"
    make_tree(root)
    real_scan = scan_module.Scanner.scan

    def slow_scan(self, *args, **kwargs):
        time.sleep(1.0)
        return real_scan(self, *args, **kwargs)

    monkeypatch.setattr(scan_module.Scanner, "scan", slow_scan)
    for key in os.environ.keys() - clean_env().keys():  # none of the runner's settings leaks in
        monkeypatch.delenv(key)
    env = dict(CONSUL_HTTP_ADDR=f"http://{consul.addr}", STATESYNC_PREFIX=prefix, STATESYNC_ROOT=str(root),
               STATESYNC_NODE="node1", STATESYNC_ALLOW_PLAINTEXT_SECRETS="true")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    logging = structlog.get_config()
    started = time.monotonic()
    try:
        assert cli.main(["backup"]) == 0
    finally:
        wall = time.monotonic() - started
        structlog.configure(**logging)  # main() pointed it at this test's captured stderr
    out, err = capsys.readouterr()
    reported = float(re.search(r"KV writes, ([\d.]+)s$", out.strip()).group(1))
    assert 1.0 <= reported <= wall, (reported, wall, out)
    summary = re.search(r"^backup: \d+ files, .* in ([\d.]+) s ", err, re.MULTILINE)
    assert summary and 1.0 <= float(summary.group(1)) <= wall + 0.05, err  # rounded to 0.1 s
