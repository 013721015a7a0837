"""Generation benchmark: tokens/s through `Generator` against plain llama-cpp-python.

`python -m bench.generation [--runs 5] [--max-tokens 128] [--threads 2]` runs the same GGUF
behind `Generator` (asyncio, a thread per generation, streaming progress, stop and deadline
checks between tokens) and as a bare `Llama` driven by `create_completion`, with the same
context size, thread count, prompt and sampling. Each measurement is a process of its own,
as a worker is: with two llama.cpp models in one process, the one decoding in a thread beside
the other's idle pool ran about 14% slower here (0.86 measured that way, 1.00 apart), which
measures the neighbour, not the code. The runs
alternate between the two, each going first in turn, so that background load on the machine
falls on both alike. Each figure is generated tokens over the wall time of the call, prompt
evaluation included; the table shows the median of the runs. The prompt makes the model
count, so neither side stops early on an end-of-text token and both generate exactly
`--max-tokens` tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.llm.generator import Generator, Sampling
from app.llm.model_file import resolve_model_path

ROOT = Path(__file__).resolve().parents[1]
PROMPT = "Counting slowly: 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"
CONTEXT = 4096


def _ours(gen: Generator, max_tokens: int) -> tuple[int, float]:
    async def go() -> tuple[int, float]:
        shown: list[str] = []

        async def on_text(text: str) -> None:
            shown.append(text)

        started = time.perf_counter()
        result = await gen.generate(PROMPT, max_tokens=max_tokens, on_text=on_text, deadline=600)
        return result.tokens, time.perf_counter() - started

    return asyncio.run(go())


def _plain(llama: Any, sampling: Sampling, max_tokens: int) -> tuple[int, float]:
    started = time.perf_counter()
    out = llama.create_completion(
        PROMPT,
        max_tokens=max_tokens,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        top_k=sampling.top_k,
        min_p=sampling.min_p,
        repeat_penalty=sampling.repeat_penalty,
    )
    tokens: int = out["usage"]["completion_tokens"]
    return tokens, time.perf_counter() - started


def _child(side: str, max_tokens: int, threads: int) -> None:
    """One measured generation (after an untimed warm-up) by one side; prints JSON."""
    path = resolve_model_path(None)
    sampling = Sampling()
    if side == "ours":
        gen = Generator(path, threads=threads, context=CONTEXT, progress_interval=1.0)
        gen.load()
        try:
            _ours(gen, 8)
            tokens, seconds = _ours(gen, max_tokens)
        finally:
            gen.close()
    else:
        from llama_cpp import Llama

        llama = Llama(
            model_path=str(path),
            n_ctx=CONTEXT,
            n_threads=threads,
            n_threads_batch=threads,
            verbose=False,
        )
        try:
            _plain(llama, sampling, 8)
            tokens, seconds = _plain(llama, sampling, max_tokens)
        finally:
            llama.close()
    print(json.dumps({"tokens": tokens, "seconds": seconds}))


def _measure(side: str, max_tokens: int, threads: int) -> tuple[int, float]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1"}
    child = ["--child", side, "--max-tokens", str(max_tokens), "--threads", str(threads)]
    done = subprocess.run(
        [sys.executable, "-m", "bench.generation", *child],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    return int(result["tokens"]), float(result["seconds"])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, and return the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", choices=["ours", "plain"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.max_tokens, args.threads)
        return {}

    path = resolve_model_path(None)
    ours: list[float] = []
    bare: list[float] = []
    counts: list[tuple[int, int]] = []
    for run in range(args.runs):
        # Which side goes first alternates, so neither always follows the other's run.
        sides = ("ours", "plain") if run % 2 == 0 else ("plain", "ours")
        measured = {side: _measure(side, args.max_tokens, args.threads) for side in sides}
        (n_ours, s_ours), (n_bare, s_bare) = measured["ours"], measured["plain"]
        ours.append(n_ours / s_ours)
        bare.append(n_bare / s_bare)
        counts.append((n_ours, n_bare))

    result: dict[str, Any] = {
        "model": path.name,
        "threads": args.threads,
        "runs": args.runs,
        "max_tokens": args.max_tokens,
        "tokens": counts,
        "generator_tokens_per_s": ours,
        "plain_tokens_per_s": bare,
        "generator_median": statistics.median(ours),
        "plain_median": statistics.median(bare),
    }
    result["ratio"] = result["generator_median"] / result["plain_median"]
    print(
        f"model {path.name}, {args.threads} threads, {args.max_tokens} tokens, "
        f"{args.runs} runs, each side in a process of its own\n"
    )
    print("| what | median tokens/s | min | max |")
    print("| --- | ---: | ---: | ---: |")
    for name, values in (("Generator (the /ask path)", ours), ("plain create_completion", bare)):
        print(
            f"| {name} | {statistics.median(values):.1f} | {min(values):.1f} | {max(values):.1f} |"
        )
    print(f"\nratio (Generator / plain): {result['ratio']:.3f} (target >= 0.95)")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
