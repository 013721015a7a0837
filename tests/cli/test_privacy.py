"""`python -m app forget --user ID [--undo]` and `python -m app privacy`: the owner's side of
/privacy, here or handed to a running worker; and opt-outs that outlive an import, a reindex
and a restore."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from arq.connections import ArqRedis

from app.cli.foreground import import_export, reindex
from app.cli.main import main
from app.cli.privacy import forget
from app.jobs import QUEUE_NAME, worker_heartbeat_key
from app.ops.backup import restore, snapshot
from app.retrieval.search import Retriever
from app.settings import Settings
from app.state import State
from app.store.db import Store
from tests.workers.conftest import drain

ROOT = Path(__file__).resolve().parents[2]
EXPORT = ROOT / "tests" / "data" / "export_general.json"
CHANNEL = "912345678901234570"
# dan_ops in the export: seven messages about the proxmox upgrade and its reboot.
DAN = "300000000000000004"


@pytest.fixture
def settings(tmp_path: Path, model_cache_dir: Path) -> Settings:
    return Settings.from_env(
        {"DATA_DIR": str(tmp_path / "data"), "MODEL_CACHE_DIR": str(model_cache_dir)}
    )


def environ(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        "DATA_DIR": str(settings.data_dir),
        "MODEL_CACHE_DIR": str(settings.model_cache_dir),
        **extra,
    }


async def authors_found(settings: Settings, query: str) -> set[str]:
    state = await State.open(settings, "test")
    try:
        results = await Retriever(state.store, state.index).search(query, {CHANNEL}, 10)
        return {r.message.author_id for r in results}
    finally:
        await state.close()


async def dan_rows(settings: Settings) -> list[tuple[str, bool, str]]:
    async with Store.from_url(settings.database_url) as store:
        rows = await store.database.fetch_all(
            "SELECT content, withheld, index_state FROM messages WHERE author_id = :a",
            {"a": DAN},
        )
    return [(str(r["content"]), bool(r["withheld"]), str(r["index_state"])) for r in rows]


def test_a_user_id_that_is_no_discord_id_is_refused_in_one_line(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    for bad in ("12ab", "", "-5", "1" * 21, "0"):
        assert main(["forget", "--user", bad], environ(settings)) == 1
        err = capsys.readouterr().err
        assert err.startswith("error: --user: ") and "is not a Discord user id" in err
        assert err.count("\n") == 1
    assert not (settings.data_dir / "bot.db").exists()


async def test_privacy_lists_who_opted_out_without_taking_the_state(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(main, ["privacy"], environ(settings)) == 0
    assert capsys.readouterr().out.strip() == "no member has opted out"
    async with Store.from_url(settings.database_url) as store:
        await store.migrate()
        await store.opt_out("80351110224678912")
    assert await asyncio.to_thread(main, ["privacy"], environ(settings)) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["user", "name", "opted", "out", "(UTC)", "messages", "withheld"]
    assert lines[1].split()[:2] == ["80351110224678912", "-"]
    assert lines[1].split()[-1] == "0"


@pytest.mark.slow
async def test_forget_survives_an_import_and_a_reindex_and_undo_waits_for_discord(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    await import_export(settings, EXPORT)
    assert DAN in await authors_found(settings, "proxmox upgrade reboot")

    done = await forget(settings, DAN, undo=False)
    assert done == f"member {DAN} opted out: 7 messages emptied, 7 vectors deleted"
    assert DAN not in await authors_found(settings, "proxmox upgrade reboot")
    assert {(c, w) for c, w, _ in await dan_rows(settings)} == {("", True)}
    assert {s for _, _, s in await dan_rows(settings)} == {"removed"}
    assert (await forget(settings, DAN, undo=False)).startswith(
        f"member {DAN} has been opted out since "
    )

    # The export still holds the text: importing it again changes nothing of Dan's.
    assert "0 new" in await import_export(settings, EXPORT)
    assert await reindex(settings)
    assert {(c, w) for c, w, _ in await dan_rows(settings)} == {("", True)}
    assert DAN not in await authors_found(settings, "proxmox upgrade reboot")
    assert await asyncio.to_thread(main, ["privacy"], environ(settings)) == 0
    listed = capsys.readouterr().out.splitlines()
    assert listed[1].split()[:2] == [DAN, "Dan"] and listed[1].split()[-1] == "7"

    undone = await forget(settings, DAN, undo=True)
    assert undone == (
        f"member {DAN} opted in again; 7 messages in 1 channels get their text back "
        "from Discord at the next sync"
    )
    # Nothing comes back from a copy: the rows stay empty until Discord gives the text.
    assert {(c, w) for c, w, _ in await dan_rows(settings)} == {("", True)}
    async with Store.from_url(settings.database_url) as store:
        assert await store.refetch_span(CHANNEL) is not None


@pytest.mark.slow
async def test_forget_is_handed_to_the_running_worker(
    tmp_path: Path, model_cache_dir: Path, redis_url: str
) -> None:
    settings = Settings.from_env(
        {
            "DATA_DIR": str(tmp_path / "data"),
            "MODEL_CACHE_DIR": str(model_cache_dir),
            "REDIS_URL": redis_url,
        }
    )
    await import_export(settings, EXPORT)
    redis = ArqRedis.from_url(redis_url)
    try:
        # A worker's heartbeat: the command line hands its work over rather than open the state.
        await redis.set(worker_heartbeat_key("worker-1"), "{}", ex=30)
        handed = asyncio.create_task(forget(settings, DAN, undo=False))
        for _ in range(200):
            if await redis.zcard(QUEUE_NAME):
                break
            await asyncio.sleep(0.05)
        await redis.delete(worker_heartbeat_key("worker-1"))
        await drain(settings)
        assert await handed == f"member {DAN} opted out: 7 messages emptied, 7 vectors deleted"
    finally:
        await redis.aclose()
    assert {(c, w) for c, w, _ in await dan_rows(settings)} == {("", True)}


async def test_a_restore_keeps_the_opt_outs_of_the_state_it_replaces(
    settings: Settings,
) -> None:
    async with Store.from_url(settings.database_url) as store:
        await store.migrate()
        await store.opt_out("111111111111111111")
    dest = settings.data_dir.parent / "backup"
    await asyncio.to_thread(snapshot, settings, dest)
    async with Store.from_url(settings.database_url) as store:
        # Opted out after the backup was taken.
        await store.opt_out("222222222222222222")
    line = await asyncio.to_thread(restore, settings, dest)
    assert "the 2 opt-outs of the replaced state are kept" in line
    async with Store.from_url(settings.database_url) as store:
        listed = [o.user_id for o in await store.opted_out_members()]
    assert listed == ["111111111111111111", "222222222222222222"]
