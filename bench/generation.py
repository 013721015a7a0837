"""Generation benchmark: tokens/s through `Generator` against plain llama-cpp-python.

`python -m bench.generation [--runs 5] [--max-tokens 128] [--threads 2]` loads the same GGUF
twice in one process: once behind `Generator` (asyncio, a thread per generation, streaming
progress, stop and deadline checks between tokens) and once as a bare `Llama` driven by
`create_completion`, with the same context size, thread count, prompt and sampling. The runs
alternate between the two, each going first in turn, so that background load on the machine
falls on both alike. Each figure is generated tokens over the wall time of the call, prompt
evaluation included; the table shows the median of the runs. The prompt makes the model
count, so neither side stops early on an end-of-text token and both generate exactly
`--max-tokens` tokens.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from app.llm.generator import Generator, Sampling
from app.llm.model_file import resolve_model_path

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


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print the table, and return the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    from llama_cpp import Llama

    path = resolve_model_path(None)
    sampling = Sampling()
    gen = Generator(path, threads=args.threads, context=CONTEXT, progress_interval=1.0)
    gen.load()
    plain = Llama(
        model_path=str(path),
        n_ctx=CONTEXT,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        verbose=False,
    )
    try:
        # One untimed round each warms caches and the KV prefix of the prompt.
        _ours(gen, 8)
        _plain(plain, sampling, 8)
        ours: list[float] = []
        bare: list[float] = []
        counts: list[tuple[int, int]] = []
        for run in range(args.runs):
            # Which side goes first alternates, so neither always follows the other's run.
            if run % 2 == 0:
                n_ours, s_ours = _ours(gen, args.max_tokens)
                n_bare, s_bare = _plain(plain, sampling, args.max_tokens)
            else:
                n_bare, s_bare = _plain(plain, sampling, args.max_tokens)
                n_ours, s_ours = _ours(gen, args.max_tokens)
            ours.append(n_ours / s_ours)
            bare.append(n_bare / s_bare)
            counts.append((n_ours, n_bare))
    finally:
        gen.close()
        plain.close()

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
    print(f"model {path.name}, {args.threads} threads, {args.max_tokens} tokens, {args.runs} runs")
    print(f"{'':<22}{'median tok/s':>14}{'min':>10}{'max':>10}")
    for name, values in (("Generator", ours), ("plain create_completion", bare)):
        print(
            f"{name:<22}{statistics.median(values):>14.1f}{min(values):>10.1f}{max(values):>10.1f}"
        )
    print(f"ratio (Generator / plain): {result['ratio']:.3f}  (target >= 0.95)")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
