"""The Icinga 2 version matrix (issue 25): one pytest run drives 2.13 (the host's own binary),
2.14 (the trixie root) and 2.16 (the sid root); the sidecars and the CLI stay on the host's
Python, only the Icinga 2 processes run in a root (tests/icinga.py, VERSIONS)."""
from __future__ import annotations

import pytest

from .. import icinga


@pytest.fixture(scope="module", params=icinga.matrix())
def icinga_root(request) -> str:
    """The root of the Icinga 2 version a module runs on ("" = the host's 2.13), for ``Node(...,
    icinga_root=...)``. Module-scoped, so a module's nodes are built once per version, and each
    (module, version) is one group on one xdist worker (tests/parallel.py). A root that is not built
    fails the test: run scripts/icinga_roots.sh."""
    return icinga.version_root(request.param)
