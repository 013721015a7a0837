"""Where a benchmark's CPU time goes: seconds used by each kind of process on the machine.

    with CpuUse({pid: "worker"}) as use:
        ...                      # the measured work
    use.seconds                  # {"worker": 41.2, "postgres": 3.1, ..., "machine": 52.0}

Every process on the machine is counted, under the name its pid was given, or else by
what it runs (postgres, chroma, redis, ...); the bench process itself, which also plays
Discord, is "bench". A process that ends inside the span has its time counted up to the
last look, so the span is looked at every `every` seconds. "machine" is the whole
machine's busy time from /proc/stat, which also holds what no process look caught, and
"steal" the time the hypervisor ran someone else's work while this machine's wanted to
run (on a shared host, a disturbed measurement shows there).
"""

from __future__ import annotations

import os
import threading
from types import TracebackType

import psutil

_KINDS = (
    ("postgres", "postgres"),
    ("chroma", "chroma"),
    ("redis-server", "redis"),
    ("llama", "llama"),
)


def _kind(process: psutil.Process, names: dict[int, str]) -> str:
    if process.pid in names:
        return names[process.pid]
    if process.pid == os.getpid():
        return "bench"
    try:
        command = " ".join(process.cmdline()) or process.name()
    except psutil.Error:
        return "other"
    return next((kind for word, kind in _KINDS if word in command), "other")


def _machine() -> tuple[float, float]:
    """The machine's busy seconds, and the seconds the hypervisor gave to others (steal)."""
    times = psutil.cpu_times()
    steal = float(getattr(times, "steal", 0.0))
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0)) - steal, steal


class CpuUse:
    """CPU seconds by kind of process over a span, looked at every `every` seconds."""

    def __init__(self, names: dict[int, str], every: float = 0.5) -> None:
        self.names = names
        self.every = every
        self.seconds: dict[str, float] = {}
        self._first: dict[int, float] = {}
        self._last: dict[int, tuple[str, float]] = {}
        self._machine = (0.0, 0.0)
        self._kinds: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> CpuUse:
        self._machine = _machine()
        self._first = {pid: cpu for pid, (_, cpu) in self._look().items()}
        self._last = self._look()
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        self._last.update(self._look())
        seconds: dict[str, float] = {}
        for pid, (name, cpu) in self._last.items():
            seconds[name] = seconds.get(name, 0.0) + cpu - self._first.get(pid, 0.0)
        busy, steal = _machine()
        seconds["machine"] = busy - self._machine[0]
        seconds["steal"] = steal - self._machine[1]
        self.seconds = seconds

    def _watch(self) -> None:
        while not self._stop.wait(self.every):
            self._last.update(self._look())

    def _look(self) -> dict[int, tuple[str, float]]:
        looked: dict[int, tuple[str, float]] = {}
        for process in psutil.process_iter():
            try:
                times = process.cpu_times()
            except psutil.Error:
                continue
            kind = self.names.get(process.pid) or self._kinds.get(process.pid) or _kind(process, {})
            self._kinds[process.pid] = kind
            looked[process.pid] = (kind, times.user + times.system)
        return looked
