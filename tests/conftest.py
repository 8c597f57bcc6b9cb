"""Session set-up shared by every test module."""
from regnet.models import native


def pytest_sessionstart(session):
    """Build the cells' C++ step (or load it from the cache) before any test starts a training subprocess,
    which would otherwise wait on the build inside its own timeout."""
    native.kernels()
