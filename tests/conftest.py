"""The suite runs at one torch thread, and what a test sets ends with it.

The two cores are shared (with the subprocesses and servers other tests start, and with other users), and
threads that wait on each other at every parallel region slow a loaded machine down by several times. A test
that needs more threads sets them itself; no test, and no module-scoped fixture (a trained run that a
resumed one must equal bit for bit), runs at a count that an earlier test happened to leave behind.
"""
import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def threads_restored_after_each_test():
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)
