"""CPU priority on a node that runs more than one part of kinoray: who yields to whom when its cores are busy.

Ray starts every worker process at niceness 15 (its ``worker_niceness`` default), Serve's API replicas and
its HAProxy ingress included, so on a shared node a viewer surge on the edge (niceness 0) took the API's CPU
(``benchmarks/api_latency.py --edge-load`` measured p95 in the hundreds of milliseconds). kinoray sets the
order itself instead: the API's processes (Ray workers) at niceness 0 (:data:`RAY_WORKER_NICENESS`), batch
work — encoder actors and the job runner — at ``cluster.worker_nice`` (15). Processes only ever raise their own
niceness, which needs no privileges.

Niceness alone does not keep the API's latency under a viewer surge: the edge's bytes are kernel work (copies,
loopback or NIC softirqs) that runs on the edge's CPUs whatever its priority, and every hop of an API call
(HAProxy, replica, database) waits for a busy CPU's current slice. So on a shared node (``kinoray up``) the edge
is also confined to part of the node's CPUs (``edge.cpus``, :func:`confine`) at niceness
:data:`SHARED_NODE_EDGE_NICE`: the API and encoders may use every CPU, have the others to themselves when
viewers saturate the edge's, and the API wins the edge's CPUs too when it needs them.
"""

from __future__ import annotations

import os

__all__ = ["RAY_WORKER_NICENESS", "SHARED_NODE_EDGE_NICE", "confine", "drop_realtime", "ray_env",
           "shared_node_edge_cpus", "yield_cpu"]

#: The environment variable Ray's raylet reads for the niceness it starts worker processes at.
RAY_WORKER_NICENESS = "RAY_worker_niceness"
#: The edge's niceness on a shared node: below the API (0), above the encoders (``cluster.worker_nice``, 15).
SHARED_NODE_EDGE_NICE = 10


def ray_env() -> dict[str, str]:
    """Environment for a Ray node kinoray starts: its worker processes (the API's replicas, HAProxy) at
    niceness 0; batch actors lower their own priority (:func:`yield_cpu`)."""
    return {RAY_WORKER_NICENESS: "0"}


def _thread_count() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("Threads:"))
    except (OSError, StopIteration, ValueError):
        return 1


def yield_cpu(niceness: int) -> None:
    """Raise the niceness of every thread of this process to ``niceness`` (never lower it). Linux keeps a
    niceness per thread (``setpriority`` on the process id changes only that thread), so each thread running now
    is set; threads started later inherit it from the thread that starts them. A single-threaded process (the
    edge before Granian starts) does not list ``/proc/self/task``."""
    threads = [0]
    if _thread_count() > 1:
        try:
            threads = [int(name) for name in os.listdir("/proc/self/task")]
        except OSError:  # no procfs: this thread only
            pass
    for thread in threads:
        try:
            if os.getpriority(os.PRIO_PROCESS, thread) < niceness:
                os.setpriority(os.PRIO_PROCESS, thread, niceness)
        except OSError:  # the thread ended meanwhile, or a lower value is not ours to set
            continue


def drop_realtime() -> int:
    """Put every thread of this process that runs under a real-time policy (``SCHED_FIFO``/``SCHED_RR``) back to
    the normal one; returns how many. SVT-AV1 (libsvtav1 through PyAV), when it may (as root, in containers
    too), gives the thread that opens an encoder and each of its own worker threads ``SCHED_FIFO`` priority 99:
    an encode then takes a node's CPUs ahead of everything — the API, Ray's raylet, the kernel's own work on
    behalf of other tasks — and every process that thread starts later inherits the policy (a test suite's
    browser did, and a kernel livelock with it held both CPUs). Call it after opening such an encoder."""
    threads = [0]
    try:
        threads = [int(name) for name in os.listdir("/proc/self/task")]
    except OSError:  # no procfs: this thread only
        pass
    changed = 0
    for thread in threads:
        try:
            if os.sched_getscheduler(thread) in (os.SCHED_FIFO, os.SCHED_RR):
                os.sched_setscheduler(thread, os.SCHED_OTHER, os.sched_param(0))
                changed += 1
        except OSError:  # the thread ended meanwhile
            continue
    return changed


def shared_node_edge_cpus(available: int) -> int:
    """The edge's CPUs on a node it shares with the API and encoders: half of ``available`` (at least 1); 0
    (every CPU) on a one-CPU node, where there is nothing to split."""
    return max(1, available // 2) if available > 1 else 0


def confine(cpus: int) -> set[int]:
    """Confine this process (and the processes it starts later) to the last ``cpus`` of the CPUs it may use
    (0 or more than it has: all of them); returns the CPUs it may use now."""
    allowed = sorted(os.sched_getaffinity(0))
    if 0 < cpus < len(allowed):
        os.sched_setaffinity(0, allowed[-cpus:])
    return os.sched_getaffinity(0)
