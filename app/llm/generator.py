"""One llama.cpp model per worker: serialised, streamed, deadline-bound generation.

A `Llama` context is not thread-safe and one worker holds one, so generations take turns on an
asyncio.Lock. Each runs in a thread of its own, so the event loop stays free while the model
decodes. The thread checks a stop flag and the deadline between tokens: when the deadline
passes it returns what exists, marked `cut_short`; when the awaiting task is cancelled it stops
at the next token and `generate` waits for the thread to end before the lock is released, so a
cancelled answer never leaves the model busy underneath the next one.

The growing text is not pushed from the thread token by token: the awaiting side looks at it
every `progress_interval` seconds and hands it to the caller's callback when it has changed,
which bounds Discord message edits and costs the decoding loop nothing.

Prompt encoding: when the GGUF carries a chat template (`tokenizer.chat_template`), a prompt
text becomes the user turn of that template, and a list of turns (`app.llm.chat`) is rendered
turn by turn; otherwise it is fed as plain completion text after BOS. Either way the prompt's
own text is tokenized with special tokens off, so text quoted from Discord can never turn into
a control token such as `<end_of_turn>`.

Memory: what a generation allocates is freed when it ends, but glibc keeps freed pages in the
arena of the thread that used them, and a worker whose generations run on ever new threads
grew by about 24 MiB every hundred answers (`python -m bench.load --floods 5`). After each
generation its thread hands the free pages back with `malloc_trim` (a few milliseconds, off
the event loop), which keeps the worker's size level; where the C library has no
`malloc_trim` (musl, macOS) nothing is done.
"""

from __future__ import annotations

import asyncio
import codecs
import ctypes
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from app.errors import BotError
from app.llm.chat import PromptFrame, PromptInput, encode_turns, flatten, prompt_frame
from app.llm.model_file import ModelError

if TYPE_CHECKING:
    from llama_cpp import Llama

    from app.settings import Settings

logger = logging.getLogger(__name__)

TextCallback = Callable[[str], Awaitable[None]]
"""Receives the answer so far, at most once per progress interval."""

FinishReason = Literal["eos", "stop", "length", "deadline", "cancelled"]


@dataclass(frozen=True, slots=True)
class Sampling:
    """Sampler settings; top_k and min_p are llama.cpp's own defaults."""

    temperature: float = 0.7
    top_p: float = 0.95
    repeat_penalty: float = 1.1
    top_k: int = 40
    min_p: float = 0.05


@dataclass(frozen=True, slots=True)
class Generation:
    """What one generation produced and what it cost."""

    text: str
    tokens: int
    prompt_tokens: int
    seconds: float
    """From the start of prompt evaluation to the last token (time queued excluded)."""
    tokens_per_second: float
    cut_short: bool
    """The deadline stopped it; `text` is what existed then."""
    finish_reason: FinishReason
    waited: float = 0.0
    """Seconds spent queued behind other generations."""


@dataclass
class _Run:
    """State shared between one generation's thread and the task awaiting it."""

    tokens: list[int]
    max_tokens: int
    stop: tuple[str, ...]
    deadline_at: float
    sampling: Sampling
    halt: threading.Event = field(default_factory=threading.Event)
    text: str = ""


class Generator:
    """The worker's one llama.cpp model; `load()` before use, `close()` when done."""

    def __init__(
        self,
        model_path: Path,
        *,
        threads: int = 2,
        context: int = 4096,
        deadline: float = 120.0,
        sampling: Sampling | None = None,
        chat_template: str | None = None,
        progress_interval: float = 1.0,
        on_generation: Callable[[Generation], None] | None = None,
    ) -> None:
        """Configure; `chat_template` replaces the GGUF's own template when given."""
        self.model_path = model_path
        self.threads = threads
        self.context = context
        self.deadline = deadline
        self.sampling = sampling or Sampling()
        self.progress_interval = progress_interval
        # Told about every finished generation (the worker counts tokens for its metrics).
        self.on_generation = on_generation
        self._template_override = chat_template
        self._template: str | None = None
        self._llama: Llama | None = None
        self._frame = PromptFrame((), ())
        self._lock = asyncio.Lock()
        self._run: _Run | None = None
        self._thread: threading.Thread | None = None
        self._trim_heap: Callable[[int], int] | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> Generator:
        """A generator for the configured (or bundled) model, not loaded yet."""
        from app.llm.model_file import resolve_model_path

        return cls(
            resolve_model_path(settings.model_path),
            threads=settings.llm_threads,
            context=settings.llm_context,
            deadline=settings.answer_deadline,
        )

    def load(self) -> None:
        """Load the model (blocking, about half a second for the bundled one); idempotent."""
        if self._llama is not None:
            return
        from llama_cpp import Llama

        started = time.monotonic()
        try:
            llama = Llama(
                model_path=str(self.model_path),
                n_ctx=self.context,
                n_threads=self.threads,
                n_threads_batch=self.threads,
                verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelError(f"cannot load the model {self.model_path}: {exc}") from exc
        template = self._template_override or llama.metadata.get("tokenizer.chat_template")
        self._trim_heap = heap_trimmer()
        self._frame = prompt_frame(llama, template)
        self._template = template
        self._llama = llama
        logger.info(
            "loaded %s in %.2fs (context %d, %d threads, %s prompts)",
            self.model_path.name,
            time.monotonic() - started,
            llama.n_ctx(),
            self.threads,
            "chat-template" if template else "plain completion",
        )

    def close(self) -> None:
        """Stop any generation in progress and free the model."""
        if self._run is not None:
            self._run.halt.set()
        if self._thread is not None:
            self._thread.join()
        if self._llama is not None:
            self._llama.close()
            self._llama = None

    @property
    def loaded(self) -> bool:
        """Whether `load()` has run."""
        return self._llama is not None

    @property
    def n_ctx(self) -> int:
        """The context window in tokens, prompt and answer together."""
        return self._model().n_ctx()

    @property
    def chat_template(self) -> str | None:
        """The chat template in use, or None when prompts are plain completion text."""
        self._model()
        return self._template

    def count_tokens(self, prompt: PromptInput) -> int:
        """Tokens the model is fed for this prompt, BOS and template included."""
        return len(self.encode(prompt))

    def encode(self, prompt: PromptInput) -> list[int]:
        """The prompt's tokens: template markers special, everything else plain text."""
        llama = self._model()
        if not isinstance(prompt, str):
            if self._template is None:
                prompt = flatten(prompt)
            else:
                return encode_turns(llama, self._template, prompt, self._frame.prefix[:1])
        body = llama.tokenize(prompt.encode("utf-8"), add_bos=False, special=False)
        return [*self._frame.prefix, *body, *self._frame.suffix]

    async def generate(
        self,
        prompt: PromptInput,
        *,
        max_tokens: int,
        stop: Sequence[str] = (),
        on_text: TextCallback | None = None,
        deadline: float | None = None,
        sampling: Sampling | None = None,
    ) -> Generation:
        """Generate after `prompt`, one call at a time; `deadline` (seconds) and `sampling`
        override the generator's own. The deadline runs from this call, time queued included,
        since the user waits for both."""
        llama = self._model()
        called = time.monotonic()
        run = _Run(
            tokens=self.encode(prompt),
            max_tokens=max_tokens,
            stop=tuple(s for s in stop if s),
            deadline_at=called + (self.deadline if deadline is None else deadline),
            sampling=sampling or self.sampling,
        )
        free = llama.n_ctx() - len(run.tokens)
        if free < 1:
            raise ModelError(
                f"the prompt has {len(run.tokens)} tokens; the context is {free + len(run.tokens)}"
            )
        run.max_tokens = max(0, min(max_tokens, free))
        async with self._lock:
            waited = time.monotonic() - called
            result = await self._run_thread(llama, run, on_text)
        result = replace(result, waited=waited)
        if self.on_generation is not None:
            self.on_generation(result)
        logger.info(
            "generated %d tokens after %d prompt tokens in %.2fs (%.1f tokens/s, %s, queued %.2fs)",
            result.tokens,
            result.prompt_tokens,
            result.seconds,
            result.tokens_per_second,
            result.finish_reason,
            waited,
        )
        return result

    def cached(self, prompt: PromptInput) -> int:
        """How many of the prompt's first tokens the model still holds from what it last read.

        llama.cpp reads only the rest (and always the last token).
        """
        llama = self._model()
        held = llama.input_ids[: llama.n_tokens].tolist()
        tokens = self.encode(prompt)[:-1]
        return next(
            (i for i, (a, b) in enumerate(zip(held, tokens, strict=False)) if a != b),
            min(len(held), len(tokens)),
        )

    async def prime(self, prompt: PromptInput) -> None:
        """Read `prompt` into the model's cache ahead of the generation that starts with it.

        llama.cpp reuses the longest prefix a prompt shares with what it read last, so after
        this the next prompt starting the same way skips those tokens (a worker primes /ask's
        fixed instructions and examples at start, so its first answer is as quick as later
        ones). Not a generation: nothing is reported to `on_generation`.
        """
        llama = self._model()
        tokens = self.encode(prompt)
        started = time.monotonic()
        run = _Run(tokens, 1, (), started + self.deadline, self.sampling)
        async with self._lock:
            await self._run_thread(llama, run, None)
        logger.info(
            "read a %d-token prompt prefix in %.2fs", len(tokens), time.monotonic() - started
        )

    async def _run_thread(
        self, llama: Llama, run: _Run, on_text: TextCallback | None
    ) -> Generation:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Generation] = loop.create_future()

        trim_heap = self._trim_heap

        def target() -> None:
            try:
                outcome: Generation | BotError = _decode(llama, run, run.sampling)
            except Exception as exc:
                outcome = BotError(f"generation failed: {exc}")
                outcome.__cause__ = exc
            if trim_heap is not None:
                trim_heap(0)
            try:
                loop.call_soon_threadsafe(_settle, done, outcome)
            except RuntimeError:
                # The loop is closed: nobody is waiting for this answer any more.
                logger.debug("generation finished after its event loop closed")

        thread = threading.Thread(target=target, name="llm-generate", daemon=True)
        self._run, self._thread = run, thread
        thread.start()
        try:
            await self._watch(done, run, on_text)
            return done.result()
        finally:
            run.halt.set()
            await _wait_out(done)
            thread.join()
            self._run, self._thread = None, None

    async def _watch(
        self, done: asyncio.Future[Generation], run: _Run, on_text: TextCallback | None
    ) -> None:
        if on_text is None:
            await asyncio.wait([done])
            return
        shown = ""
        while not done.done():
            await asyncio.wait([done], timeout=self.progress_interval)
            text = run.text
            if not done.done() and text.strip() and text != shown:
                shown = text
                await on_text(text)

    def _model(self) -> Llama:
        if self._llama is None:
            raise ModelError("the model is not loaded; call Generator.load() first")
        return self._llama


def heap_trimmer() -> Callable[[int], int] | None:
    """glibc's `malloc_trim(pad)`, which returns free heap pages to the system, if there is one."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim


def _decode(llama: Llama, run: _Run, sampling: Sampling) -> Generation:
    """The decoding loop (runs in the generation thread)."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
    # Text that could be the start of a stop sequence is held back from progress updates.
    holdback = max((len(s) for s in run.stop), default=1) - 1
    text = ""
    count = 0
    reason: FinishReason = "length"
    started = time.monotonic()
    if run.max_tokens == 0:
        reason = "length"
    elif started >= run.deadline_at:
        reason = "deadline"
    else:
        tokens = llama.generate(
            run.tokens,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            min_p=sampling.min_p,
            temp=sampling.temperature,
            repeat_penalty=sampling.repeat_penalty,
        )
        try:
            for token in tokens:
                if llama_cpp.llama_vocab_is_eog(vocab, token):
                    reason = "eos"
                    break
                count += 1
                piece = utf8.decode(llama.detokenize([token]))
                if piece:
                    scan_from = max(0, len(text) - holdback)
                    text += piece
                    cut = _find_stop(text, run.stop, scan_from)
                    if cut is not None:
                        text = text[:cut]
                        reason = "stop"
                        break
                    run.text = text[: len(text) - holdback] if holdback else text
                if count >= run.max_tokens:
                    break
                if run.halt.is_set():
                    reason = "cancelled"
                    break
                if time.monotonic() >= run.deadline_at:
                    reason = "deadline"
                    break
        finally:
            tokens.close()
    if reason != "stop":
        text += utf8.decode(b"", final=True)
    seconds = time.monotonic() - started
    return Generation(
        text=text.strip(),
        tokens=count,
        prompt_tokens=len(run.tokens),
        seconds=seconds,
        tokens_per_second=count / seconds if seconds > 0 else 0.0,
        cut_short=reason == "deadline",
        finish_reason=reason,
    )


def _find_stop(text: str, stops: Sequence[str], start: int) -> int | None:
    """Where the earliest stop sequence begins at or after `start`, if any does."""
    hits = [i for i in (text.find(s, start) for s in stops) if i >= 0]
    return min(hits) if hits else None


def _settle(done: asyncio.Future[Generation], outcome: Generation | BotError) -> None:
    if done.done():
        return
    if isinstance(outcome, BotError):
        done.set_exception(outcome)
    else:
        done.set_result(outcome)


async def _wait_out(done: asyncio.Future[Generation]) -> None:
    """Wait for the thread to finish even if this task is cancelled meanwhile."""
    cancelled = False
    while not done.done():
        try:
            await asyncio.wait([done])
        except asyncio.CancelledError:
            cancelled = True
    if cancelled:
        raise asyncio.CancelledError
