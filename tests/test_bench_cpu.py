"""bench/cpu.py: CPU time is counted for the process that used it, even one that ended."""

from __future__ import annotations

import subprocess
import sys
import time

from bench.cpu import CpuUse

_SPIN = "import time\nend = time.process_time() + 0.6\nwhile time.process_time() < end: pass"


def test_a_named_process_that_ends_inside_the_span_is_counted() -> None:
    with CpuUse({}, every=0.1) as use:
        spinner = subprocess.Popen([sys.executable, "-c", _SPIN])
        use.names[spinner.pid] = "spinner"
        spinner.wait(30)
    assert 0.4 < use.seconds["spinner"] < 1.5
    assert use.seconds["machine"] >= use.seconds["spinner"] * 0.9


def test_time_used_before_the_span_is_not_counted() -> None:
    spun = _SPIN + "\nprint('spun', flush=True)\ntime.sleep(5)"
    with subprocess.Popen(
        [sys.executable, "-c", spun], stdout=subprocess.PIPE, text=True
    ) as spinner:
        assert spinner.stdout is not None and spinner.stdout.readline() == "spun\n"
        with CpuUse({spinner.pid: "spinner"}, every=0.1) as use:
            time.sleep(0.3)
        spinner.kill()
    assert use.seconds["spinner"] < 0.1
