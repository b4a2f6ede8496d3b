"""Measuring helpers shared by the benchmark scripts: the CPU model, machine-wide CPU and disk counters, a command
run with its process tree's peak RSS and CPU seconds sampled (``run_measured``), and a per-step profile read from
Spark's event log (steps = the jobs' ``spark.job.description``)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path

import psutil


def append_record(path: Path, text: str) -> None:
    """Append one run's report ``text`` to a ``RESULTS_*.md`` file (what every benchmark's ``--record`` does)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write("\n" + text)


def cpu_model(unknown: str = "unknown CPU") -> str:
    """The CPU's model name from /proc/cpuinfo (Linux), else what ``platform.processor()`` says, else ``unknown``."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or unknown


def system_cpu() -> dict[str, float]:
    """Machine-wide CPU seconds so far (all cores): busy (user, nice, system, irq, softirq, steal), iowait, idle."""
    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system + getattr(t, "irq", 0) + getattr(t, "softirq", 0) + getattr(t, "steal", 0)
    return {"busy": busy, "iowait": getattr(t, "iowait", 0.0), "idle": t.idle}


def disk_io() -> tuple[int, int]:
    """Machine-wide bytes read and written so far (all disks)."""
    io = psutil.disk_io_counters()
    return (io.read_bytes, io.write_bytes) if io else (0, 0)


class TreeSampler(threading.Thread):
    """Peak RSS and CPU seconds of a process and all its descendants, sampled every ``interval`` seconds; also the
    command lines seen (to tell, e.g., whether Spark started a Python worker)."""

    def __init__(self, pid: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_rss = 0
        self.processes: set[str] = set()
        self._cpu: dict[int, float] = {}  # the last value seen per pid
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            rss = 0
            for proc in procs:
                try:
                    rss += proc.memory_info().rss
                    times = proc.cpu_times()
                    self._cpu[proc.pid] = times.user + times.system + times.children_user + times.children_system
                    self.processes.add(" ".join(proc.cmdline()[:3])[:80])
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    pass
            self.peak_rss = max(self.peak_rss, rss)
            self.done.wait(self.interval)

    @property
    def cpu_seconds(self) -> float:
        return sum(self._cpu.values())


def run_measured(command: list[str], *, cwd: Path, env: dict | None = None, stderr_path: Path | None = None,
                 interval: float = 0.5) -> dict:
    """Run ``command``; return wall seconds, peak tree RSS, CPU seconds, exit code, stdout (with stderr merged in,
    unless ``stderr_path`` takes it), the processes seen, the load average before/after and the machine-wide CPU
    (busy / iowait / idle seconds, all cores) and disk bytes over the same interval, so that what the run got of
    the cores, and what others took, can be judged."""
    load_before, cpu_before, io_before = os.getloadavg(), system_cpu(), disk_io()
    started = time.time()
    stderr = open(stderr_path, "w", encoding="utf-8") if stderr_path else subprocess.STDOUT
    try:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)
        sampler = TreeSampler(proc.pid, interval)
        sampler.start()
        output = proc.communicate()[0]
    finally:
        if stderr_path:
            stderr.close()
    wall = time.time() - started
    sampler.done.set()
    sampler.join()
    cpu_after, io_after = system_cpu(), disk_io()
    return {"seconds": wall, "peak_rss": sampler.peak_rss, "cpu_seconds": sampler.cpu_seconds,
            "returncode": proc.returncode, "output": output, "processes": sorted(sampler.processes),
            "load_before": load_before, "load_after": os.getloadavg(),
            "system": {k: cpu_after[k] - cpu_before[k] for k in cpu_before},
            "disk_read": io_after[0] - io_before[0], "disk_written": io_after[1] - io_before[1]}


def event_log_profile(log_dir: Path) -> dict[str, dict[str, float]]:
    """Per Spark job description (e.g. "lastfm: <step>"): stages, tasks, summed task run / CPU / JVM GC time (s),
    shuffle write and spill (MiB), from the (uncompressed) event log in ``log_dir``."""
    files = sorted(p for p in log_dir.rglob("*") if p.is_file() and not p.name.startswith("appstatus"))
    stage_desc: dict[int, str] = {}
    profile: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for path in files:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                event = json.loads(line)
                kind = event.get("Event")
                if kind == "SparkListenerJobStart":
                    desc = (event.get("Properties") or {}).get("spark.job.description") or "(no step)"
                    for stage_id in event.get("Stage IDs", []):
                        stage_desc[stage_id] = desc
                elif kind == "SparkListenerStageCompleted":
                    info = event["Stage Info"]
                    if info.get("Completion Time") and info.get("Submission Time"):
                        entry = profile[stage_desc.get(info["Stage ID"], "(no step)")]
                        entry["stages"] += 1
                        entry["stage_wall_s"] += (info["Completion Time"] - info["Submission Time"]) / 1000
                elif kind == "SparkListenerTaskEnd":
                    metrics = event.get("Task Metrics") or {}
                    entry = profile[stage_desc.get(event["Stage ID"], "(no step)")]
                    entry["tasks"] += 1
                    entry["task_run_s"] += metrics.get("Executor Run Time", 0) / 1000
                    entry["task_cpu_s"] += metrics.get("Executor CPU Time", 0) / 1e9
                    entry["gc_s"] += metrics.get("JVM GC Time", 0) / 1000
                    entry["shuffle_write_mb"] += (metrics.get("Shuffle Write Metrics") or {}).get(
                        "Shuffle Bytes Written", 0) / 2**20
                    entry["spill_mb"] += metrics.get("Disk Bytes Spilled", 0) / 2**20
    return {desc: dict(entry) for desc, entry in profile.items()}
