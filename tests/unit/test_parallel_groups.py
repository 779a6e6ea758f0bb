"""tests/parallel.py's groups for a module whose module-scoped fixture is parametrized (the Icinga 2
version matrix, tests/e2e/conftest.py): one group per (module, parameter), so each version builds
its cluster once, on one xdist worker, and the versions of a module spread over the workers."""
from __future__ import annotations

from ..parallel import group_of

pytest_plugins = ["pytester"]

MODULE = """
import pytest

@pytest.fixture(scope="module", params=["2.13", "2.14"])
def version(request):
    return request.param

@pytest.fixture(scope="module")
def cluster(version):
    return version

@pytest.fixture
def scratch():
    return 1

def test_first(cluster):
    pass

def test_second(cluster, scratch):
    pass

def test_alone(scratch):
    pass
"""


def test_each_parameter_of_a_module_scoped_fixture_is_a_group_of_its_own(pytester):
    items = pytester.getitems(MODULE)
    groups = {item.name: group_of(item) for item in items}
    module = items[0].nodeid.split("::", 1)[0]
    assert groups == {"test_first[2.13]": f"{module}[version=2.13]", "test_second[2.13]": f"{module}[version=2.13]",
                      "test_first[2.14]": f"{module}[version=2.14]", "test_second[2.14]": f"{module}[version=2.14]",
                      "test_alone": None}


def test_a_module_scoped_fixture_without_parameters_keeps_the_module_as_its_group(pytester):
    items = pytester.getitems("import pytest\n\n@pytest.fixture(scope='module')\ndef shared():\n    return 1\n\n"
                              "def test_one(shared):\n    pass\n\ndef test_two(shared):\n    pass\n")
    assert {group_of(item) for item in items} == {items[0].nodeid.split("::", 1)[0]}
