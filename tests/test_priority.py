"""CPU placement on a shared node (``kinoray.priority``), read back from ``/proc`` by the kernel's own account:
each thread's niceness and each process's allowed CPUs. Every change runs in a child process (niceness only
goes up, and affinity would stick to the test process)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kinoray.priority import shared_node_edge_cpus


def thread_niceness(pid: int) -> dict[int, int]:
    """``{tid: niceness}`` of every thread of ``pid``, from ``/proc/PID/task/TID/stat`` (field 19)."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        out[int(task.name)] = int(stat.rsplit(")", 1)[1].split()[16])
    return out


def _child(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_yield_cpu_lowers_every_running_thread_and_threads_started_later_inherit() -> None:
    result = _child("""
import json, os, threading
from kinoray.priority import yield_cpu
from tests.test_priority import thread_niceness
started = threading.Event(); stop = threading.Event()
def idle():
    started.set(); stop.wait()
before = threading.Thread(target=idle); before.start(); started.wait()
yield_cpu(7)
started.clear(); after = threading.Thread(target=idle); after.start(); started.wait()
seen = thread_niceness(os.getpid())
yield_cpu(3)  # never lowers
again = thread_niceness(os.getpid())
stop.set(); before.join(); after.join()
print(json.dumps({"seen": sorted(seen.values()), "again": sorted(again.values())}))
""")
    assert len(result["seen"]) >= 3 and set(result["seen"]) == {7}
    assert set(result["again"]) == {7}


def test_confine_keeps_the_last_cpus_and_children_inherit_them() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        pytest.skip("one CPU: nothing to confine to")
    result = _child("""
import json, os, subprocess, sys
from kinoray.priority import confine
mine = sorted(confine(1))
child = subprocess.run([sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"],
                       capture_output=True, text=True, check=True).stdout.strip()
print(json.dumps({"mine": mine, "child": child, "all": sorted(confine(0))}))
""")
    assert result["mine"] == allowed[-1:]
    assert result["child"] == str(allowed[-1:])
    assert result["all"] == allowed[-1:]  # 0 confines nothing further (and widens nothing)


@pytest.mark.parametrize(("available", "edge"), [(1, 0), (2, 1), (3, 1), (8, 4), (64, 32)])
def test_a_shared_node_gives_the_edge_half_its_cpus(available: int, edge: int) -> None:
    assert shared_node_edge_cpus(available) == edge


def test_an_svt_av1_encoder_leaves_no_thread_real_time() -> None:
    """As root, opening libsvtav1 makes the opening thread and SVT's ~40 workers SCHED_FIFO 99 (shown on a bare
    PyAV context when this runs as root); kinoray's encoder session and the muxing stream put them back, so
    neither the encode nor any process started afterwards (which inherits the policy) runs real-time."""
    result = _child("""
import fractions, json, os, subprocess, sys
import av
from kinoray.encoders.registry import get_backend
from kinoray.encoders.base import EncoderSettings
def real_time():
    return sum(os.sched_getscheduler(int(t)) in (os.SCHED_FIFO, os.SCHED_RR) for t in os.listdir("/proc/self/task"))
settings = EncoderSettings(codec="av1", width=320, height=240, frame_rate=fractions.Fraction(25),
                           time_base=fractions.Fraction(1, 12800), gop_frames=50, max_bitrate=500_000,
                           buffer_size=1_000_000)
session = get_backend("av1", "libsvtav1").open(settings)
ours = real_time()
child = subprocess.run([sys.executable, "-c", "import os; print(os.sched_getscheduler(0))"],
                       capture_output=True, text=True, check=True).stdout.strip()
session.close()
bare = av.CodecContext.create("libsvtav1", "w")
bare.width, bare.height, bare.pix_fmt = 320, 240, "yuv420p"
bare.time_base, bare.framerate = fractions.Fraction(1, 25), 25
bare.open()
print(json.dumps({"ours": ours, "child": int(child), "bare": real_time()}))
""")
    assert result["ours"] == 0 and result["child"] == os.SCHED_OTHER
    if os.geteuid() == 0:  # the hazard this guards against (an unprivileged SVT-AV1 cannot raise itself)
        assert result["bare"] > 0
