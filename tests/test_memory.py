"""workers.memory: the AugMix actors keep freed buffers in the heap instead of the kernel's hands."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

PROBE = """
import sys, torch
from workers.memory import retain_freed_memory
if sys.argv[1] == "retain":
    assert retain_freed_memory() and retain_freed_memory()  # idempotent
buffer = torch.empty(64 << 20, dtype=torch.uint8)  # above glibc's largest adaptive mmap threshold (32 MiB)
address = buffer.data_ptr()
for line in open("/proc/self/maps"):
    if line.rstrip().endswith("[heap]"):
        low, high = (int(part, 16) for part in line.split()[0].split("-"))
        print("heap" if low <= address < high else "mapped")
        break
else:
    print("mapped")
"""


def _placement(mode: str) -> str:
    result = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
    return result.stdout.strip().splitlines()[-1]


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc mallopt only")
def test_large_buffers_come_from_the_heap_once_retained():
    # A mapped block goes back to the kernel when freed and is faulted in (and zeroed) page by page
    # at its next use; a heap block stays with the process (benchmarks/augment_throughput.py prints
    # the page faults per batch of both settings).
    assert _placement("default") == "mapped"
    assert _placement("retain") == "heap"
