"""regnet.allocator: a pass's freed maps serve the next pass instead of fresh pages (each test's own process)."""
from __future__ import annotations

import platform
import subprocess
import sys
import textwrap
from unittest.mock import patch

import pytest

from regnet import allocator

# Six rounds of four written maps, each round's a little smaller (24, 22, ..., 14 MB), freed; prints the page
# faults of rounds 2 to 6. With glibc's default thresholds each round's maps are fresh pages again (about
# 72,000 faults here): the first free raises the mmap threshold to 24 MB and the trim threshold to twice that,
# and each later round's frees leave more than that at the heap's top, which goes back to the OS.
ROUNDS = textwrap.dedent("""
    import resource, sys
    import torch
    from regnet.allocator import keep_freed_memory

    if sys.argv[1] == "kept":
        assert keep_freed_memory()
    counts = []
    for megabytes in (24, 22, 20, 18, 16, 14):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        maps = [torch.ones(megabytes << 18) for _ in range(4)]
        del maps
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    print(sum(counts[1:]))
""")

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the setting is glibc's")


def later_faults(setting: str) -> int:
    out = subprocess.run([sys.executable, "-c", ROUNDS, setting], capture_output=True, text=True, check=True)
    return int(out.stdout.split()[-1])


@glibc_only
def test_kept_maps_are_reused_without_page_faults():
    kept, default = later_faults("kept"), later_faults("default")
    assert kept < 256  # the first round's 96 MB serve every later round: no fresh pages
    assert default > 8192  # glibc's default faults in at least a 32 MB map's worth again


class FakeLibc:
    def __init__(self, accepts: set[int]):
        self.accepts, self.calls = accepts, []

    def mallopt(self, parameter: int, value: int) -> int:
        self.calls.append((parameter, value))
        return int(parameter in self.accepts)


@glibc_only
@pytest.mark.parametrize("accepts, expected_calls, result", [
    ({allocator.M_MMAP_THRESHOLD, allocator.M_TRIM_THRESHOLD},
     [(allocator.M_MMAP_THRESHOLD, allocator.KEPT_BYTES), (allocator.M_TRIM_THRESHOLD, allocator.KEPT_BYTES)], True),
    (set(), [(allocator.M_MMAP_THRESHOLD, allocator.KEPT_BYTES)], False),  # a refused mmap threshold: trim untouched
])
def test_mmap_threshold_is_set_before_the_trim_threshold(accepts, expected_calls, result):
    libc = FakeLibc(accepts)
    with patch.object(allocator.ctypes, "CDLL", return_value=libc):
        assert allocator.keep_freed_memory.__wrapped__() is result
    assert libc.calls == expected_calls


def test_other_libcs_are_left_alone():
    with patch.object(allocator.platform, "libc_ver", return_value=("", "")), \
            patch.object(allocator.ctypes, "CDLL") as cdll:
        assert allocator.keep_freed_memory.__wrapped__() is False
    cdll.assert_not_called()


def test_the_cli_and_the_engine_keep_freed_memory():
    from regnet.train import Config, cli, loop

    with patch.object(cli, "keep_freed_memory") as kept, pytest.raises(SystemExit):
        cli.main(["models"])
    kept.assert_called_once_with()
    config = Config()
    config.model.name = "no-such-model"
    with patch.object(loop, "keep_freed_memory") as kept, pytest.raises(ValueError):
        loop.train(config)  # refused before any run folder, but after the allocator was set
    kept.assert_called_once_with()
