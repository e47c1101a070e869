"""Fixtures of the synthesis tests."""
import pytest
import torch

from synthesis_helpers import compositional_problem


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks: one thread avoids OpenMP barrier stalls on the shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def problem():
    return compositional_problem()
