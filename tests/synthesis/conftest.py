"""Fixtures of the synthesis tests."""
import pytest

from synthesis_helpers import compositional_problem


@pytest.fixture(autouse=True)
def one_thread(one_torch_thread):
    """Every synthesis test runs with one torch thread (``one_torch_thread``)."""


@pytest.fixture(scope="session")
def problem():
    return compositional_problem()
