"""Measuring helpers shared by the benchmark scripts: the CPU model, machine-wide CPU and disk counters, and a
per-step profile read from Spark's event log (steps = the jobs' ``spark.job.description``)."""

from __future__ import annotations

import json
import platform
from collections import defaultdict
from pathlib import Path

import psutil


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
