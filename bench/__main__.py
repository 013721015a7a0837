"""`make bench`: run every benchmark and write bench/RESULTS.md.

    python -m bench [NAME ...]

Each benchmark runs as its own process (`python -m bench.NAME`) and prints
Markdown; this collects what they print, with the machine they ran on.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"

BENCHMARKS = {
    "frontdoor": "The front door against its peers: signed interactions under wrk",
    "sync": "Sync: Discord REST to SQLite and Chroma",
    "embedding": "Embeddings and vector search",
    "generation": "Generation: llama.cpp through the worker's Generator",
    "answer": "An /ask end to end: signed interaction to first text and final answer",
    "stats": "/stats with its chart on a 100,000-message channel: signed request to final message",
    "load": "Load: 500 concurrent /ask against `python -m app run`",
    "scale": "Scale-out: answers per minute with 1 and 2 workers; sync on PostgreSQL + Chroma",
    "quality": "Answer quality on real conversations (LoCoMo): /search recall, /ask F1",
}


def machine() -> str:
    """Cores, memory and CPU model of this machine, in one line."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = int(line.split()[1]) // (1024 * 1024)
    return f"{os.cpu_count()} cores, {memory} GiB, {model}, Python {platform.python_version()}"


def run(name: str) -> tuple[str, float, int]:
    """Run one benchmark; return what it printed, its seconds and its exit status."""
    started = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", f"bench.{name}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    output = done.stdout.strip()
    if done.returncode != 0:
        output += "\n\n```\n" + done.stderr.strip()[-3000:] + "\n```"
    return output, time.monotonic() - started, done.returncode


def main(names: list[str]) -> int:
    """Run the named benchmarks (all by default) and write their sections of RESULTS.md.

    Naming some benchmarks re-runs only those: the other sections already in the file
    are kept, each with the date it was measured.
    """
    chosen = names or list(BENCHMARKS)
    unknown = [n for n in chosen if n not in BENCHMARKS]
    if unknown:
        print(f"unknown benchmarks: {', '.join(unknown)}; known: {', '.join(BENCHMARKS)}")
        return 2
    kept = _sections(RESULTS.read_text()) if names and RESULTS.exists() else {}
    status = 0
    for name in chosen:
        print(f"== bench.{name} ==", flush=True)
        output, seconds, code = run(name)
        print(output, flush=True)
        status |= code
        measured = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        kept[name] = "\n".join(
            [
                f"## {BENCHMARKS[name]}",
                "",
                f"Command: `python -m bench.{name}` ({seconds:.0f} s, {measured}"
                + (f", exit status {code}" if code else "")
                + ")",
                "",
                output,
                "",
            ]
        )
    header = [
        "# Benchmark results",
        "",
        "Written by `make bench` (`python -m bench [NAME ...]`); each section says when it",
        f"was measured. Machine: {machine()}.",
        "",
    ]
    # Sections kept from the file come back with their own trailing blank lines.
    body = "\n\n".join(kept[name].strip() for name in BENCHMARKS if name in kept)
    RESULTS.write_text("\n".join(header) + "\n" + body + "\n")
    print(f"wrote {RESULTS}")
    return status


def _sections(text: str) -> dict[str, str]:
    """The sections of an earlier RESULTS.md, by benchmark name."""
    titles = {f"## {title}": name for name, title in BENCHMARKS.items()}
    sections: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = titles.get(line)
            if current is not None:
                sections[current] = ""
        if current is not None:
            sections[current] += line + "\n"
    return sections


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
