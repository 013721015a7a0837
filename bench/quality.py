"""Answer quality on real conversations: /search evidence recall, /ask citations and token F1.

    python -m bench.quality [--asks-per-category 20 | --asks N] [--conversations N]

Data: the dev split of LoCoMo (Maharana et al., "Evaluating Very Long-Term
Conversational Memory of LLM Agents", ACL 2024; snap-research/LoCoMo, CC BY-NC
4.0), read from `../shared/eval/locomo-dev.json` and never copied here. Each
conversation becomes one text channel of a guild on the local fake Discord: a
turn is a message by a member named after the speaker, timestamped from its
session's date plus 45 s per turn; a shared photo is an image attachment whose
alt text is the photo's caption. The channels are synced through the real REST
sync; then every question is asked in its conversation's channel through
signed interactions to `python -m app web` and `python -m app worker`:

- `/search` (limit 10) for every answerable question (categories 1-4):
  evidence recall@1/@5/@10, by category, and the same recall for plain dense
  search over the same index (the vector index alone), as a ratio;
- `/ask` for a deterministic sample of each category (or, with `--asks N`, of
  N questions drawn from all categories alike): the share whose sources
  cite an evidence message, token F1 of the answer (before the sources) against
  the gold answer, the share of category 5 (unanswerable) questions answered
  with "the messages do not say", and time to first visible text and to the
  final answer. A sample of each category over-weights the rare ones, so the
  report also gives the figures for all answerable questions of the split,
  each category weighted by its share of them, with their standard error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from bench.answer import app_env, wait_http

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "eval" / "locomo-dev.json"
CATEGORIES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
_LINK = re.compile(r"https://discord\.com/channels/\d+/(\d+)/(\d+)")
_ARTICLES = re.compile(r"\b(a|an|the|and)\b")
_REFUSAL = re.compile(r"messages do not say|do not say|don't say|not mentioned", re.I)


def session_time(text: str) -> datetime:
    """LoCoMo's `1:56 pm on 8 May, 2023` as a UTC time."""
    return datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y").replace(tzinfo=UTC)


def evidence_ids(raw: list[str]) -> list[str]:
    """Evidence dia_ids, split where one string holds several, normalised to `D1:3`."""
    found = []
    for entry in raw:
        for part in re.split(r"[;,\s]+", entry):
            part = part.strip().replace("D:", "D")
            if re.fullmatch(r"D\d+:\d+", part):
                found.append(part)
    return found


def normalise(text: str) -> list[str]:
    """Lower-cased tokens without punctuation and the words a, an, the, and."""
    text = str(text).lower()
    text = "".join(c for c in text if c not in set(string.punctuation))
    return _ARTICLES.sub(" ", text).split()


def token_f1(prediction: str, gold: str) -> float:
    """Token F1 of a prediction against a gold answer, as the LoCoMo evaluation counts it."""
    pred, ref = normalise(prediction), normalise(gold)
    if not pred or not ref:
        return float(pred == ref)
    common = sum(min(pred.count(t), ref.count(t)) for t in set(pred))
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def seed(fake: Any, conversations: list[dict[str, Any]]) -> dict[str, Any]:
    """Serve each conversation as a channel; returns the guild, channels and id maps."""
    guild = fake.add_guild("LoCoMo")
    channels: list[dict[str, Any]] = []
    by_dia: list[dict[str, str]] = []
    for sample in conversations:
        talk = sample["conversation"]
        channel = fake.add_channel(guild["id"], f"conv-{sample.get('sample_id', len(channels))}")
        ids: dict[str, str] = {}
        sessions = sorted(
            (int(k.split("_")[1]), k) for k in talk if re.fullmatch(r"session_\d+", k) and talk[k]
        )
        for _, key in sessions:
            start = session_time(talk[f"{key}_date_time"]).timestamp()
            for turn_index, turn in enumerate(talk[key]):
                author = fake.add_user(turn["speaker"].lower(), global_name=turn["speaker"])
                attachments = []
                if turn.get("img_url"):
                    attachments.append(
                        {
                            "id": fake.next_id(),
                            "filename": "photo.jpg",
                            "size": 1000,
                            "url": "https://cdn.discordapp.com/attachments/1/2/photo.jpg",
                            "proxy_url": "https://media.discordapp.net/attachments/1/2/photo.jpg",
                            "content_type": "image/jpeg",
                            "description": turn.get("blip_caption", ""),
                        }
                    )
                message = fake.add_message(
                    channel["id"],
                    turn["text"],
                    author=author,
                    at=start + 45.0 * turn_index,
                    attachments=attachments,
                )
                ids[turn["dia_id"]] = message["id"]
        channels.append(channel)
        by_dia.append(ids)
    return {"guild": guild, "channels": channels, "by_dia": by_dia}


def ask_one(
    fake: Any, signer: Any, base: str, payload: dict[str, Any], encode: Any
) -> dict[str, Any]:
    """Send one signed interaction and wait for its final answer; returns text and timings."""
    body = encode(payload)
    started = time.monotonic()
    response = httpx.post(f"{base}/interactions", content=body, headers=signer.headers(body))
    if json.loads(response.content).get("type") != 5:
        raise RuntimeError(f"not deferred: {response.text}")
    first = final = None
    deadline = started + 300
    while final is None and time.monotonic() < deadline:
        delivered = fake.interaction(payload["token"])
        if first is None and delivered.edits:
            first = time.monotonic() - started
        content = delivered.original["content"] if delivered.original else ""
        if content and not content.endswith("…"):
            final = time.monotonic() - started
        else:
            time.sleep(0.01)
    if first is None or final is None:
        raise RuntimeError("no answer within 300 s")
    time.sleep(0.05)  # follow-ups of a long answer land right after the edit
    text = "\n".join(m["content"] for m in fake.interaction(payload["token"]).shown())
    return {"text": text, "first": first, "final": final}


def main(
    asks_per_category: int = 20,
    conversations: int | None = None,
    seed_value: int = 7,
    dump: Path | None = None,
    asks: int | None = None,
) -> None:
    """Run the benchmark and print its tables; `dump` gets every /ask as a JSON line.

    `asks` replaces the per-category sample with that many questions drawn from all of them,
    so each category comes in its own share.
    """
    sys.path.insert(0, str(ROOT))
    from app.cli.foreground import sync
    from app.cli.redis_server import RedisServer
    from app.discord.snowflakes import time_snowflake
    from app.settings import Settings
    from tests.fake_discord import FakeDiscord
    from tests.signing import Signer, command, encode

    data = json.loads(DATA.read_text(encoding="utf-8"))[:conversations]
    signer = Signer()
    rng = random.Random(seed_value)
    with tempfile.TemporaryDirectory() as tmp, FakeDiscord() as fake:
        world = seed(fake, data)
        env = app_env(
            fake, signer, Path(tmp) / "data", RATE_LIMIT_PER_MINUTE="100000", QUEUE_LIMIT="0"
        )
        started = time.monotonic()
        asyncio.run(sync(Settings.from_env(env), [world["guild"]["id"]], []))
        sync_seconds = time.monotonic() - started
        counter = iter(range(1, 10_000_000))

        def payload(name: str, options: dict[str, Any], channel: dict[str, Any]) -> Any:
            n = next(counter)
            p = command(
                name,
                options,
                interaction_id=str(time_snowflake(time.time(), n)),
                user_id=str(7_000_000 + n),
                permissions=(1 << 10) | (1 << 16),
            )
            p.update(
                guild_id=world["guild"]["id"],
                channel_id=channel["id"],
                application_id=fake.application_id,
                token=f"quality-token-{n}-abcdefghijklmnopqrstuvwxyz",
            )
            return p

        questions = []
        for index, sample in enumerate(data):
            for qa in sample["qa"]:
                wanted = {world["by_dia"][index].get(d) for d in evidence_ids(qa["evidence"])}
                questions.append({**qa, "conv": index, "wanted": wanted - {None}})
        answerable = [q for q in questions if q["category"] in (1, 2, 3, 4)]
        by_category: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for q in questions:
            by_category[q["category"]].append(q)
        if asks is None:
            sample = [
                q
                for c in sorted(by_category)
                for q in rng.sample(by_category[c], min(asks_per_category, len(by_category[c])))
            ]
        else:
            sample = rng.sample(questions, min(asks, len(questions)))
        with RedisServer(Path(tmp) / "redis", persist=False) as redis:
            env["REDIS_URL"] = redis.url
            processes = [
                subprocess.Popen(
                    [sys.executable, "-m", "app", role],
                    cwd=ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                for role in ("web", "worker")
            ]
            try:
                base = f"http://127.0.0.1:{env['PORT']}"
                wait_http(f"{base}/health", 120)
                searched = []
                for q in answerable:
                    channel = world["channels"][q["conv"]]
                    got = ask_one(
                        fake,
                        signer,
                        base,
                        payload("search", {"query": q["question"][:300], "limit": 10}, channel),
                        encode,
                    )
                    links = [m.group(2) for m in _LINK.finditer(got["text"])]
                    searched.append({"q": q, "links": links, "final": got["final"]})
                asked = []
                for q in sample:
                    channel = world["channels"][q["conv"]]
                    got = ask_one(
                        fake,
                        signer,
                        base,
                        payload("ask", {"question": q["question"][:300]}, channel),
                        encode,
                    )
                    asked.append({"q": q, **got})
            finally:
                for process in processes:
                    process.terminate()
                    process.wait(timeout=60)
        dense = asyncio.run(_dense_recall(Settings.from_env(env), answerable, world))
    if dump is not None:
        with dump.open("w", encoding="utf-8") as out:
            for row in asked:
                q = row["q"]
                record = {
                    "category": q["category"],
                    "question": q["question"],
                    "gold": str(q.get("answer", q.get("adversarial_answer", ""))),
                    "evidence": sorted(q["wanted"]),
                    "reply": row["text"],
                }
                out.write(json.dumps(record) + "\n")
    _report(searched, asked, dense, sync_seconds, len(data))


async def _dense_recall(
    settings: Any, answerable: list[dict[str, Any]], world: dict[str, Any]
) -> list[list[str]]:
    """The top 10 of the vector index alone for each question (no words, no fusion)."""
    from app.state import State

    state = await State.open(settings, "quality benchmark")
    try:
        found = []
        for q in answerable:
            channel = world["channels"][q["conv"]]["id"]
            hits = await state.index.aquery(q["question"], channel_ids=[channel], k=10)
            found.append([str(h.id) for h in hits])
        return found
    finally:
        await state.close()


def _recall(rows: list[tuple[dict[str, Any], list[str]]], k: int) -> float:
    if not rows:
        return 0.0
    return sum(1 for q, links in rows if q["wanted"] & set(links[:k])) / len(rows)


def _report(
    searched: list[dict[str, Any]],
    asked: list[dict[str, Any]],
    dense: list[list[str]],
    sync_seconds: float,
    conversations: int,
) -> None:
    print(
        f"LoCoMo dev split (Maharana et al., ACL 2024; CC BY-NC 4.0), {conversations} "
        f"conversations synced in {sync_seconds:.0f} s; {len(searched)} answerable questions "
        f"searched, {len(asked)} asked\n"
    )
    print("| /search evidence recall | questions | @1 | @5 | @10 |")
    print("| --- | ---: | ---: | ---: | ---: |")
    hybrid = [(r["q"], r["links"]) for r in searched]
    plain = [(r["q"], links) for r, links in zip(searched, dense, strict=True)]
    for category in (1, 2, 3, 4):
        rows = [row for row in hybrid if row[0]["category"] == category]
        print(
            f"| {category} {CATEGORIES[category]} | {len(rows)} | {_recall(rows, 1):.3f} "
            f"| {_recall(rows, 5):.3f} | {_recall(rows, 10):.3f} |"
        )
    print(
        f"| **all** | {len(hybrid)} | **{_recall(hybrid, 1):.3f}** | **{_recall(hybrid, 5):.3f}** "
        f"| **{_recall(hybrid, 10):.3f}** |"
    )
    print(
        f"| plain dense search (vector index alone) | {len(plain)} | {_recall(plain, 1):.3f} "
        f"| {_recall(plain, 5):.3f} | {_recall(plain, 10):.3f} |"
    )
    ratio = _recall(hybrid, 5) / max(_recall(plain, 5), 1e-9)
    search_p50 = statistics.median(r["final"] for r in searched) if searched else 0.0
    print(
        f"\nHybrid over plain dense, recall@5: **{ratio:.2f}x**; /search p50 {search_p50:.2f} s\n"
    )
    if not asked:
        return
    print("| /ask | questions | cites evidence | token F1 | says the messages do not say |")
    print("| --- | ---: | ---: | ---: | ---: |")
    # Per answerable category, each answer's figures; the rows for 1-4 are made from these.
    scored: dict[int, dict[str, list[float]]] = {}
    refusal5: list[float] = [0.0]
    for category in (1, 2, 3, 4, 5):
        group = [r for r in asked if r["q"]["category"] == category]
        if not group:
            continue
        answers = [_answer_part(r["text"]) for r in group]
        refused = [bool(_REFUSAL.search(a)) for a in answers]
        if category == 5:
            print(f"| 5 {CATEGORIES[5]} | {len(group)} | | | {sum(refused) / len(group):.3f} |")
            refusal5 = [float(x) for x in refused]
            continue
        cited = [float(bool(r["q"]["wanted"] & set(_source_links(r["text"])))) for r in group]
        f1 = [
            token_f1(a, str(r["q"].get("answer", ""))) for a, r in zip(answers, group, strict=True)
        ]
        scored[category] = {"cited": cited, "f1": f1}
        print(
            f"| {category} {CATEGORIES[category]} | {len(group)} | {statistics.mean(cited):.3f} "
            f"| {statistics.mean(f1):.3f} | ({statistics.mean(refused):.3f} refused) |"
        )
    all_cited = [x for g in scored.values() for x in g["cited"]]
    all_f1 = [x for g in scored.values() for x in g["f1"]]
    print(
        f"| **1-4** | {len(all_f1)} | **{statistics.mean(all_cited):.3f}** "
        f"| **{statistics.mean(all_f1):.3f}** | "
        f"**{statistics.mean(refusal5):.3f}** (category 5) |"
    )
    shares = {c: sum(1 for r in searched if r["q"]["category"] == c) for c in scored}
    cited_all, cited_error = _weighted([(shares[c], g["cited"]) for c, g in scored.items()])
    f1_all, f1_error = _weighted([(shares[c], g["f1"]) for c, g in scored.items()])
    print(
        f"| all {len(searched)} answerable (weighted) | {len(all_f1)} "
        f"| {cited_all:.3f} ± {cited_error:.3f} | {f1_all:.3f} ± {f1_error:.3f} | |"
    )
    firsts = [r["first"] for r in asked]
    finals = [r["final"] for r in asked]
    print(
        f"\n/ask time to first visible text p50 {statistics.median(firsts):.2f} s "
        f"(max {max(firsts):.2f}); to the final answer p50 {statistics.median(finals):.2f} s "
        f"(max {max(finals):.2f})"
    )


def _weighted(groups: list[tuple[int, list[float]]]) -> tuple[float, float]:
    """A stratified sample's estimate of the whole population's mean, and its standard error.

    Each group is (its size in the population, the sampled values); the sample asks the same
    number of every category, so the plain mean over-weights the rare ones.
    """
    total = sum(size for size, values in groups if values)
    if not total:
        return 0.0, 0.0
    mean = sum(size / total * statistics.mean(values) for size, values in groups if values)
    variance = sum(
        (size / total) ** 2 * statistics.variance(values) / len(values)
        for size, values in groups
        if len(values) > 1
    )
    return mean, variance**0.5


def _answer_part(text: str) -> str:
    return text.split("**Sources**", 1)[0].strip()


def _source_links(text: str) -> list[str]:
    sources = text.split("**Sources**", 1)
    return [m.group(2) for m in _LINK.finditer(sources[1])] if len(sources) == 2 else []


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--asks-per-category", type=int, default=20)
    parser.add_argument(
        "--asks", type=int, default=None, help="ask this many questions drawn from all categories"
    )
    parser.add_argument("--conversations", type=int, default=None)
    parser.add_argument("--dump", type=Path, default=None, help="write every /ask as JSON lines")
    arguments = parser.parse_args()
    main(
        arguments.asks_per_category,
        arguments.conversations,
        dump=arguments.dump,
        asks=arguments.asks,
    )
