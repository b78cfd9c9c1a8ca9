"""Small helpers shared by the benchmarks: timing, peak memory, JSON output, child processes.

Every measurement runs in its own process (bench.py starts it with run_isolated), so the peak
resident set size it reports belongs to that one measurement and nothing else.
"""
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import time


MIN_REPEATS = 3


def median_ms(fn, warmup, repeats, budget_s=None):
    """Median wall time of fn() in milliseconds over `repeats` calls, after `warmup` untimed calls.

    The median, not the mean, because other people compile on the same cores: one slow outlier
    must not move the result. With budget_s, stop early once MIN_REPEATS calls are timed and the
    timed calls took budget_s in all (the largest layers take seconds per call).
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
        if budget_s and len(times) >= MIN_REPEATS and sum(times) > budget_s * 1e3:
            break
    return statistics.median(times)


def peak_rss_bytes():
    """Peak resident set size of this process so far: getrusage's ru_maxrss (KiB on Linux).

    Linux carries ru_maxrss across execve, so it is only this program's own when the process
    that exec'd it was small: run_isolated sees to that.
    """
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def run_isolated(argv, env=None, timeout_s=None):
    """Run argv as a grandchild forked by a small /bin/sh; returns the CompletedProcess.

    Started straight from this Python (which has imported PyTorch), the child's ru_maxrss would
    start at our peak RSS, not its own: the kernel keeps the exec'ing process's high-water mark.
    A shell forks it instead, so it starts from the shell's few MiB. On timeout the whole
    process group is killed and subprocess.TimeoutExpired raised.
    """
    shell = ["/bin/sh", "-c", '"$@"; exit $?', "sh"] + [str(a) for a in argv]
    proc = subprocess.Popen(shell, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(shell, proc.returncode, out, err)


def emit(obj):
    """Print one JSON object on one line of stdout: the only output bench.py parses."""
    json.dump(obj, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()
