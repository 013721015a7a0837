"""The generator with the real bundled Gemma 3 270M GGUF, loaded once for the module."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from app.errors import BotError
from app.llm.chat import prompt_frame
from app.llm.generator import Generation, Generator, Sampling, heap_trimmer
from app.llm.model_file import DEFAULT_MODEL, bundled_model_path
from app.llm.prompts import Quote, ask_prompt, summary_prompts
from app.settings import Settings

pytestmark = [pytest.mark.asyncio(loop_scope="module"), pytest.mark.slow]

# Counting never ends on its own, so only max_tokens, the deadline or a cancel can stop it.
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,"
GREEDY = Sampling(temperature=0.0)

# Gemma 3's instruction template, in the shape the instruction-tuned GGUFs carry it.
GEMMA_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) "
    "+ '\n' + message['content'] | trim + '<end_of_turn>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def model_path() -> Path:
    return bundled_model_path()


@pytest.fixture(scope="module")
def generator(model_path: Path) -> Iterator[Generator]:
    # Greedy decoding, so that what the model writes (counting on from 12) is the same every
    # run; the default samples at temperature 0.7, which now and then wanders off the count.
    gen = Generator(model_path, threads=2, context=4096, progress_interval=0.05, sampling=GREEDY)
    gen.load()
    yield gen
    gen.close()


def generation_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "llm-generate"]


async def test_from_settings_configures_without_loading(model_path: Path) -> None:
    settings = Settings(
        model_path=model_path, llm_threads=3, llm_context=2048, answer_deadline=30.0
    )
    gen = Generator.from_settings(settings)
    assert gen.model_path == model_path
    # Without MODEL_PATH: the default instruction-tuned model.
    assert Generator.from_settings(Settings()).model_path.name == DEFAULT_MODEL.name
    assert (gen.threads, gen.context, gen.deadline) == (3, 2048, 30.0)
    assert not gen.loaded
    with pytest.raises(BotError):
        gen.count_tokens("hello")


async def test_generate_before_load_is_an_error(model_path: Path) -> None:
    with pytest.raises(BotError, match="not loaded"):
        await Generator(model_path).generate("hi", max_tokens=4)


async def test_the_bundled_base_model_has_no_chat_template(generator: Generator) -> None:
    assert generator.chat_template is None
    assert generator.n_ctx == 4096
    text = "Hello <start_of_turn>world"
    tokens = generator.encode(text)
    assert tokens[0] == 2  # BOS, and nothing else around the text
    assert generator.count_tokens(text) == len(tokens)
    # Text from Discord is never read as a control token.
    assert 105 not in tokens


async def test_a_chat_template_frames_the_prompt_as_a_user_turn(generator: Generator) -> None:
    from llama_cpp import Llama

    llama = Llama(model_path=str(generator.model_path), n_ctx=512, vocab_only=True, verbose=False)
    try:
        frame = prompt_frame(llama, GEMMA_TEMPLATE)
        user = llama.tokenize(b"user\n", add_bos=False)
        model = llama.tokenize(b"model\n", add_bos=False)
        assert list(frame.prefix) == [2, 105, *user]
        assert list(frame.suffix) == [106, *llama.tokenize(b"\n", add_bos=False), 105, *model]
        assert prompt_frame(llama, None).prefix == (2,)
        assert prompt_frame(llama, None).suffix == ()
    finally:
        llama.close()


async def test_a_chat_template_override_is_used_for_generation(model_path: Path) -> None:
    gen = Generator(model_path, context=512, chat_template=GEMMA_TEMPLATE)
    gen.load()
    try:
        assert gen.chat_template == GEMMA_TEMPLATE
        tokens = gen.encode("say <end_of_turn> hi")
        assert tokens[:2] == [2, 105] and tokens.count(105) == 2
        assert tokens.count(106) == 1  # the frame's own, not the quoted one
        result = await gen.generate("Name a colour.", max_tokens=6)
        assert result.prompt_tokens == gen.count_tokens("Name a colour.")
        assert 0 < result.tokens <= 6 or result.finish_reason == "eos"
    finally:
        gen.close()


async def test_generates_an_answer_from_an_ask_prompt(generator: Generator) -> None:
    quotes = [
        Quote("alice", "general", datetime(2024, 3, 1, tzinfo=UTC), "The deploy is on Friday."),
        Quote("bob", "ops", datetime(2024, 3, 2, tzinfo=UTC), "Deploy moved to Monday."),
    ]
    prompt = ask_prompt(
        "When is the deploy?", quotes, count_tokens=generator.count_tokens, n_ctx=generator.n_ctx
    )
    texts: list[str] = []
    for _ in range(3):  # a small base model may answer with an immediate stop; not three times
        result = await generator.generate(
            prompt.text, max_tokens=prompt.max_tokens, stop=prompt.stop
        )
        assert result.prompt_tokens == prompt.tokens
        assert result.finish_reason in ("eos", "stop", "length")
        assert not result.cut_short
        assert result.tokens <= prompt.max_tokens
        assert not any(s in result.text for s in prompt.stop if s.strip())
        texts.append(result.text)
    assert any(texts)


async def test_a_primed_prefix_is_not_read_again(generator: Generator) -> None:
    quote = Quote("alice", "general", datetime(2024, 3, 1, tzinfo=UTC), "The deploy is Friday.")
    fixed, asked = (
        ask_prompt(q, quotes, count_tokens=generator.count_tokens, n_ctx=generator.n_ctx)
        for q, quotes in (("", []), ("When is the deploy?", [quote]))
    )
    pairs = zip(generator.encode(fixed.text), generator.encode(asked.text), strict=False)
    shared = next(i for i, (a, b) in enumerate(pairs) if a != b)
    assert shared > len(generator.encode(fixed.text)) // 2  # instructions and examples
    reported: list[Generation] = []
    generator.on_generation = reported.append
    try:
        await generator.generate("Something else entirely.", max_tokens=2, sampling=GREEDY)
        assert generator.cached(asked.text) < shared
        cold = await generator.generate(asked.text, max_tokens=8, stop=asked.stop)
        await generator.generate("Something else entirely.", max_tokens=2, sampling=GREEDY)
        await generator.prime(fixed.text)
        assert generator.cached(asked.text) == shared
        warm = await generator.generate(asked.text, max_tokens=8, stop=asked.stop)
    finally:
        generator.on_generation = None
    assert warm.text == cold.text  # greedy: reading less changes nothing in the answer
    assert len(reported) == 4  # priming is not a generation


async def test_streams_growing_text_and_returns_sampling_stats(generator: Generator) -> None:
    seen: list[str] = []

    async def on_text(text: str) -> None:
        seen.append(text)

    result = await generator.generate(COUNTING, max_tokens=40, on_text=on_text)
    assert result.finish_reason == "length" and result.tokens == 40
    assert result.text.startswith("13")
    assert result.tokens_per_second == pytest.approx(result.tokens / result.seconds)
    assert seen, "no progress update in a 40-token generation"
    assert all(b.startswith(a) for a, b in itertools.pairwise(seen))
    assert result.text.startswith(seen[-1].strip())


async def test_a_call_can_sample_greedily_whatever_the_generator_default(
    generator: Generator,
) -> None:
    story = "Once upon a time, in a village by the sea,"
    greedy = Sampling(temperature=0.0)
    first = await generator.generate(story, max_tokens=24, sampling=greedy)
    again = await generator.generate(story, max_tokens=24, sampling=greedy)
    assert first.text == again.text and first.tokens == 24
    hot = Sampling(temperature=5.0, top_k=0, top_p=1.0, min_p=0.0)
    wild = [await generator.generate(story, max_tokens=24, sampling=hot) for _ in range(2)]
    assert any(w.text != first.text for w in wild)


async def test_a_stop_sequence_ends_the_answer_before_it(generator: Generator) -> None:
    result = await generator.generate(COUNTING, max_tokens=60, stop=[" 16,"])
    assert result.finish_reason == "stop"
    assert result.text == "13, 14, 15,"


async def test_the_deadline_cuts_a_long_generation_short(generator: Generator) -> None:
    started = time.monotonic()
    result = await generator.generate(COUNTING, max_tokens=3000, deadline=1.0)
    elapsed = time.monotonic() - started
    assert result.cut_short and result.finish_reason == "deadline"
    assert 0 < result.tokens < 3000
    assert result.text.startswith("13")
    assert elapsed < 3.0


async def test_concurrent_generations_never_overlap(generator: Generator) -> None:
    overlaps: list[int] = []

    async def on_text(text: str) -> None:
        overlaps.append(len(generation_threads()))

    async def timed() -> tuple[float, Generation]:
        called = time.monotonic()
        return called, await generator.generate(COUNTING, max_tokens=40, on_text=on_text)

    runs = await asyncio.gather(timed(), timed())
    assert [r.tokens for _, r in runs] == [40, 40]
    # (when it got the model, how long it decoded) for each, in the order they got it
    (start_a, a), (start_b, b) = sorted(((c + r.waited, r) for c, r in runs), key=lambda t: t[0])
    # The later one got the model only after the earlier one had finished decoding.
    assert start_b >= start_a + a.seconds
    assert b.waited >= a.seconds * 0.9
    assert overlaps and set(overlaps) == {1}


async def test_cancelling_stops_the_model_loop(generator: Generator) -> None:
    progress = asyncio.Event()

    async def on_text(text: str) -> None:
        progress.set()

    task = asyncio.create_task(generator.generate(COUNTING, max_tokens=3000, on_text=on_text))
    await asyncio.wait_for(progress.wait(), timeout=30)
    assert len(generation_threads()) == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # No thread is left decoding, and the model is free for the next caller at once.
    assert generation_threads() == []
    result = await generator.generate(COUNTING, max_tokens=5)
    assert result.waited < 0.05 and result.tokens == 5


async def test_a_prompt_longer_than_the_context_is_refused(generator: Generator) -> None:
    with pytest.raises(BotError, match="context"):
        await generator.generate("word " * 5000, max_tokens=10)


async def test_max_tokens_is_clamped_to_the_room_left(model_path: Path) -> None:
    gen = Generator(model_path, context=512)
    gen.load()
    try:
        per_word = gen.count_tokens("a " * 101) - gen.count_tokens("a ")
        prompt = "a " * ((512 - 20) * 100 // per_word)
        room = gen.n_ctx - gen.count_tokens(prompt)
        assert 0 < room < 40
        result = await gen.generate(prompt, max_tokens=500, deadline=60)
        assert result.tokens <= room
    finally:
        gen.close()


async def test_fitted_prompts_never_exceed_the_window_with_the_real_tokenizer(
    generator: Generator,
) -> None:
    start = datetime(2024, 1, 1, tzinfo=UTC)
    quotes = [
        Quote(
            f"user{i}",
            "general",
            start + timedelta(minutes=i),
            f"message {i}: " + "déjà vu 🎉 " * (i % 40),
        )
        for i in range(3000)
    ]
    budget = generator.n_ctx - 256
    prompt = ask_prompt(
        "What happened?",
        quotes,
        count_tokens=generator.count_tokens,
        n_ctx=generator.n_ctx,
        max_tokens=256,
        quote_tokens=budget,
    )
    assert 10 < len(prompt.quotes) < 3000
    assert prompt.tokens == len(generator.encode(prompt.text)) <= budget
    assert prompt.tokens > budget - 120  # the window is used, not left mostly empty
    parts = summary_prompts(
        quotes[:600], count_tokens=generator.count_tokens, n_ctx=generator.n_ctx, max_tokens=256
    )
    assert len(parts) > 1
    assert all(len(generator.encode(p.text)) <= budget for p in parts)


async def test_free_heap_pages_can_be_handed_back_on_this_c_library() -> None:
    # The worker's memory stays level only where malloc_trim is found and callable (glibc).
    trim = heap_trimmer()
    assert trim is not None
    scratch = [bytearray(200_000) for _ in range(64)]
    del scratch[::2]
    assert trim(0) in (0, 1)
