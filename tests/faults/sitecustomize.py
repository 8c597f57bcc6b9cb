"""Fault injection for the crash tests: imported at start-up by every Python process whose PYTHONPATH has this folder.

With ``REGNET_KILL_AT_WRITE=N`` in the environment the process SIGKILLs itself
at its N-th atomic write of the run-folder contract (``regnet.runs.atomic``),
after the temp file is written and fsynced and before the rename: the worst
moment, and the state left between any two writes. It lives here, not in the
library, so that the production write path carries no test hook.
"""
import os

from atomic_writes import KILL_AT_WRITE_ENV, kill_at_write

if os.environ.get(KILL_AT_WRITE_ENV, "").isdigit():
    kill_at_write(int(os.environ[KILL_AT_WRITE_ENV]))
