"""enrol.icinga_api.missing_permission on the answers real Icinga 2 versions gave (recorded
from tests/e2e/test_enrol_icinga_api.py's master, docs/ICINGA_VERSIONS.md section 7)."""
from __future__ import annotations

import pytest

from statesync.enrol.icinga_api import missing_permission

# 2.13.6, GET /v1/objects/endpoints/master1?verbose=1 as a user without objects/query/Endpoint
HIDDEN_2_13 = (b'{"diagnostic_information":"Error: Missing permission: objects/query/endpoint\\n",'
               b'"error":404,"status":"No objects found."}')
# 2.14.6+deb13u1 and 2.16.6, the same request
REFUSED_2_16 = b'{"error":403,"status":"Missing permission: objects/query/endpoint"}'
# 2.13.6, a missing endpoint asked for by a user who may read endpoints
MISSING = (b'{"diagnostic_information":"Error: Object does not exist.\\n\\nStacktrace:\\n 0# __cxa_throw",'
           b'"error":404,"status":"No objects found."}')


def test_a_403_is_a_missing_permission():
    assert missing_permission(403, REFUSED_2_16)


def test_a_404_naming_a_missing_permission_in_its_diagnosis_is_one_too():
    assert missing_permission(404, HIDDEN_2_13)


@pytest.mark.parametrize("status,payload", [
    (404, MISSING),
    (404, b'{"error":404,"status":"No objects found."}'),  # without verbose=1: no way to tell
    (404, b"not json"),
    (404, b"[]"),
    (200, HIDDEN_2_13),
    (500, REFUSED_2_16),
])
def test_a_missing_object_or_any_other_answer_is_no_missing_permission(status, payload):
    assert not missing_permission(status, payload)
