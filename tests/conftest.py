import pytest

from problems import make_problem

# tests/parity holds the conftest that tox -e pot-parity copies next to POT's tests
collect_ignore = ["parity"]


@pytest.fixture
def problem():
    return make_problem
