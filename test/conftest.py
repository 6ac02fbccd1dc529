"""Suite-wide settings: one intra-op thread (tiny models are dominated by per-op overhead, and a
busy 2-core machine makes multi-threaded tiny ops 20x slower), and the `slow` marker."""

import pytest
import torch


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long end-to-end tests (still part of the default suite)")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
