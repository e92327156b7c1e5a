"""workers.memory: the AugMix actors keep freed buffers instead of faulting them in again each batch."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROBE = """
import resource, sys, torch
from workers.memory import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory() and retain_freed_memory()  # idempotent
source = torch.ones(4 << 20, dtype=torch.uint8)
for _ in range(3):
    source.to(torch.float32)  # 16 MiB, freed at once: the same size as the next one
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    source.to(torch.float32)
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> int:
    result = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return int(result.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc mallopt only")
def test_retained_memory_is_not_faulted_in_again():
    default, retained = _faults("default"), _faults("retain")
    assert default > 10 * 1000  # 10 x 16 MiB of fresh pages, mapped and zeroed again (4096 pages each)
    assert retained < 200
