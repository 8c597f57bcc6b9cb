"""Every test starts with one torch thread.

The two cores are shared (with the subprocesses and servers other tests start, and with other users), and
threads that wait on each other at every parallel region slow a loaded machine down by several times. A test
that needs more threads sets them itself; what it sets ends with it, so no test runs at a count that an
earlier test happened to leave behind.
"""
import pytest
import torch


@pytest.fixture(autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
