"""What counts as Icinga 2 state in a root: restore.apply.has_icinga_state, pure file system."""
from __future__ import annotations

import os

import pytest

from statesync.restore.apply import has_icinga_state


def test_no_ca_and_no_certs_is_no_state(tmp_path):
    (tmp_path / "api/zones").mkdir(parents=True)
    assert not has_icinga_state(tmp_path)
    assert not has_icinga_state(tmp_path / "absent")


def test_the_empty_certs_of_the_2_16_image_is_no_state(tmp_path):
    (tmp_path / "certs").mkdir()
    (tmp_path / "certificate-requests").mkdir()
    assert not has_icinga_state(tmp_path)
    (tmp_path / "ca").mkdir()
    assert not has_icinga_state(tmp_path)


@pytest.mark.parametrize("path", ["certs/ca.crt", "certs/satellite1.key", "ca/ca.key"])
def test_anything_in_certs_or_ca_is_state(tmp_path, path):
    (tmp_path / path).parent.mkdir(parents=True)
    (tmp_path / path).write_text("x")
    assert has_icinga_state(tmp_path)


def test_a_file_named_certs_is_state(tmp_path):
    (tmp_path / "certs").write_text("not a directory")
    assert has_icinga_state(tmp_path)


def test_a_certs_that_cannot_be_listed_is_state(tmp_path):
    # Never restore over what cannot be looked at (here a symlink loop: ELOOP).
    os.symlink("certs", tmp_path / "certs")
    assert has_icinga_state(tmp_path)


def test_a_certs_the_guard_emptied_is_state(tmp_path):
    # The guard moved the old CA's certificates into its quarantine: the node enrols again; a
    # restore would bring the old certificates back (a Swarm task restarts through
    # `restore --if-empty` before it enrols).
    (tmp_path / "certs").mkdir()
    (tmp_path / ".statesync-quarantine/20261207T070000Z").mkdir(parents=True)
    assert has_icinga_state(tmp_path)
