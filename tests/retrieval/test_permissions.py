"""Discord's permission precedence, and the scopes computed from a real SQLite store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from app.discord.permissions import (
    ADMINISTRATOR,
    ALL_PERMISSIONS,
    MANAGE_THREADS,
    READ_ACCESS,
    READ_MESSAGE_HISTORY,
    VIEW_CHANNEL,
)
from app.retrieval.permissions import (
    Member,
    PermissionScope,
    Viewer,
    can_read,
    compute_base_permissions,
    compute_permissions,
    readable_channels,
)
from app.store.db import Store
from app.store.models import (
    GUILD_CATEGORY,
    GUILD_FORUM,
    PRIVATE_THREAD,
    PUBLIC_THREAD,
    ChannelRecord,
    PermissionOverwrite,
    RoleRecord,
)

GUILD = "100"
USER = "500"
MODS = "201"
MEMBERS = "202"
MUTED = "203"
ADMINS = "204"
SEND_MESSAGES = 1 << 11

EVERYONE_READS = {GUILD: READ_ACCESS}


def member(*roles: str, owner: bool = False) -> Member:
    return Member(user_id=USER, role_ids=frozenset(roles), is_owner=owner)


def role(target: str, *, allow: int = 0, deny: int = 0) -> PermissionOverwrite:
    return PermissionOverwrite(id=target, type=0, allow=allow, deny=deny)


def user(target: str, *, allow: int = 0, deny: int = 0) -> PermissionOverwrite:
    return PermissionOverwrite(id=target, type=1, allow=allow, deny=deny)


def text(channel_id: str, *overwrites: PermissionOverwrite) -> ChannelRecord:
    return ChannelRecord(
        id=channel_id, guild_id=GUILD, name=f"c{channel_id}", permission_overwrites=overwrites
    )


def thread(channel_id: str, parent: str, *, private: bool = False) -> ChannelRecord:
    return ChannelRecord(
        id=channel_id,
        guild_id=GUILD,
        name=f"t{channel_id}",
        type=PRIVATE_THREAD if private else PUBLIC_THREAD,
        parent_id=parent,
    )


def readable(roles: dict[str, int], who: Member, channel: ChannelRecord) -> bool:
    return can_read(channel, compute_permissions(GUILD, roles, who, channel))


# Base permissions


def test_base_is_everyone_or_member_roles() -> None:
    roles = {GUILD: VIEW_CHANNEL, MEMBERS: READ_MESSAGE_HISTORY, MODS: MANAGE_THREADS}
    assert compute_base_permissions(GUILD, roles, member(MEMBERS)) == READ_ACCESS
    assert compute_base_permissions(GUILD, roles, member()) == VIEW_CHANNEL


def test_unknown_role_grants_nothing() -> None:
    roles = {GUILD: 0, MEMBERS: READ_ACCESS}
    assert compute_base_permissions(GUILD, roles, member("999")) == 0
    assert not readable(roles, member("999"), text("1"))


def test_everyone_missing_history_hides_the_channel() -> None:
    roles = {GUILD: VIEW_CHANNEL | SEND_MESSAGES}
    assert compute_permissions(GUILD, roles, member(), text("1")) & VIEW_CHANNEL
    assert not readable(roles, member(), text("1"))


def test_owner_holds_everything_despite_overwrites() -> None:
    channel = text("1", role(GUILD, deny=VIEW_CHANNEL), user(USER, deny=VIEW_CHANNEL))
    assert compute_permissions(GUILD, {}, member(owner=True), channel) == ALL_PERMISSIONS
    assert not readable({}, member(), channel)


def test_admin_role_bypasses_every_overwrite() -> None:
    roles = {GUILD: 0, ADMINS: ADMINISTRATOR}
    assert compute_base_permissions(GUILD, roles, member(ADMINS)) == ALL_PERMISSIONS
    channel = text(
        "1",
        role(GUILD, deny=VIEW_CHANNEL),
        role(ADMINS, deny=READ_ACCESS),
        user(USER, deny=READ_ACCESS),
    )
    assert compute_permissions(GUILD, roles, member(ADMINS), channel) == ALL_PERMISSIONS
    assert readable(roles, member(ADMINS), thread("2", "1", private=True))


def test_administrator_in_an_overwrite_grants_no_bypass() -> None:
    # Only base permissions make an administrator; an allow bit in a channel does not.
    channel = text("1", role(MEMBERS, allow=ADMINISTRATOR), user(USER, deny=VIEW_CHANNEL))
    assert compute_permissions(GUILD, EVERYONE_READS, member(MEMBERS), channel) == 0


# Overwrites, in Discord's order


def test_everyone_deny_then_role_allow_is_allowed() -> None:
    channel = text("1", role(GUILD, deny=VIEW_CHANNEL), role(MEMBERS, allow=VIEW_CHANNEL))
    assert readable(EVERYONE_READS, member(MEMBERS), channel)
    assert not readable(EVERYONE_READS, member(), channel)


def test_role_allow_then_member_deny_is_denied() -> None:
    channel = text(
        "1",
        role(GUILD, deny=VIEW_CHANNEL),
        role(MEMBERS, allow=VIEW_CHANNEL),
        user(USER, deny=VIEW_CHANNEL),
    )
    assert not readable(EVERYONE_READS, member(MEMBERS), channel)


def test_member_allow_beats_role_deny() -> None:
    channel = text("1", role(MUTED, deny=READ_ACCESS), user(USER, allow=READ_ACCESS))
    assert readable(EVERYONE_READS, member(MUTED), channel)


@pytest.mark.parametrize("deny_first", [True, False])
def test_allow_wins_among_roles(deny_first: bool) -> None:
    # Whatever order the overwrites come in, roles' denies all apply before their allows.
    overwrites = [role(MUTED, deny=VIEW_CHANNEL), role(MEMBERS, allow=VIEW_CHANNEL)]
    channel = text("1", *(overwrites if deny_first else overwrites[::-1]))
    assert readable(EVERYONE_READS, member(MUTED, MEMBERS), channel)
    assert not readable(EVERYONE_READS, member(MUTED), channel)


def test_role_deny_beats_everyone_allow() -> None:
    # The @everyone overwrite comes first, so a role's deny overrides its allow, even when
    # the member's role list names the guild id.
    roles = {GUILD: 0}
    channel = text("1", role(GUILD, allow=READ_ACCESS), role(MUTED, deny=VIEW_CHANNEL))
    assert readable(roles, member(), channel)
    assert not readable(roles, member(MUTED), channel)
    assert not readable(roles, member(MUTED, GUILD), channel)


def test_overwrite_of_another_member_or_role_is_ignored() -> None:
    channel = text("1", role(MODS, allow=READ_ACCESS), user("501", allow=READ_ACCESS))
    assert not readable({GUILD: 0}, member(MEMBERS), channel)


def test_overwrite_type_must_match() -> None:
    # An overwrite counts only for its own kind of target, whatever its id.
    as_member = text("1", PermissionOverwrite(id=MEMBERS, type=1, allow=READ_ACCESS, deny=0))
    assert not readable({GUILD: 0}, member(MEMBERS), as_member)
    as_role = text("1", PermissionOverwrite(id=USER, type=0, allow=READ_ACCESS, deny=0))
    assert not readable({GUILD: 0}, member(), as_role)


def test_no_view_channel_means_no_permission_at_all() -> None:
    channel = text("1", role(GUILD, deny=VIEW_CHANNEL))
    assert compute_permissions(GUILD, {GUILD: READ_ACCESS | MANAGE_THREADS}, member(), channel) == 0


def test_channel_of_another_guild_grants_nothing() -> None:
    other = ChannelRecord(id="1", guild_id="999", name="elsewhere")
    assert compute_permissions(GUILD, EVERYONE_READS, member(), other) == 0


# Threads


def test_thread_inherits_its_parent() -> None:
    hidden = text("1", role(GUILD, deny=VIEW_CHANNEL))
    channels = [text("2"), thread("3", "2"), hidden, thread("4", "1")]
    assert readable_channels(GUILD, EVERYONE_READS, member(), channels) == {"2", "3"}


def test_private_thread_needs_manage_threads() -> None:
    channels = [text("1"), thread("2", "1", private=True), thread("3", "1")]
    assert readable_channels(GUILD, EVERYONE_READS, member(), channels) == {"1", "3"}
    roles = {**EVERYONE_READS, MODS: MANAGE_THREADS}
    assert readable_channels(GUILD, roles, member(MODS), channels) == {"1", "2", "3"}


def test_manage_threads_must_hold_in_the_parent() -> None:
    roles = {**EVERYONE_READS, MODS: MANAGE_THREADS}
    parent = text("1", role(MODS, deny=MANAGE_THREADS))
    channels = [parent, thread("2", "1", private=True)]
    assert readable_channels(GUILD, roles, member(MODS), channels) == {"1"}


def test_thread_without_stored_parent_is_hidden() -> None:
    assert readable_channels(GUILD, EVERYONE_READS, member(), [thread("3", "2")]) == set()


def test_only_message_channels_are_listed() -> None:
    channels = [
        ChannelRecord(id="1", guild_id=GUILD, name="cat", type=GUILD_CATEGORY),
        ChannelRecord(id="2", guild_id=GUILD, name="forum", type=GUILD_FORUM),
        thread("3", "2"),
        text("4"),
    ]
    assert readable_channels(GUILD, EVERYONE_READS, member(), channels) == {"3", "4"}


# Scopes from a real store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with Store.from_url(f"sqlite:///{tmp_path / 'bot.db'}") as opened:
        await opened.migrate()
        yield opened


async def seed(store: Store) -> None:
    """A guild where @everyone reads #general; #staff is for mods; #log hides history."""
    await store.replace_roles(
        GUILD,
        [
            RoleRecord(id=GUILD, guild_id=GUILD, name="@everyone", permissions=READ_ACCESS),
            RoleRecord(id=MODS, guild_id=GUILD, name="mods", permissions=MANAGE_THREADS),
            RoleRecord(id=ADMINS, guild_id=GUILD, name="admins", permissions=ADMINISTRATOR),
        ],
    )
    await store.upsert_channels(
        [
            text("10"),
            thread("11", "10"),
            thread("12", "10", private=True),
            text("20", role(GUILD, deny=VIEW_CHANNEL), role(MODS, allow=VIEW_CHANNEL)),
            thread("21", "20"),
            text("30", role(GUILD, deny=READ_MESSAGE_HISTORY)),
            ChannelRecord(id="40", guild_id=GUILD, name="cat", type=GUILD_CATEGORY),
            ChannelRecord(id="90", guild_id="999", name="other guild"),
        ]
    )


def viewer(*roles: str, channel: str = "10", permissions: int | None = None) -> Viewer:
    return Viewer(
        guild_id=GUILD,
        user_id=USER,
        role_ids=frozenset(roles),
        channel_id=channel,
        channel_permissions=permissions,
    )


async def test_server_scope_follows_roles_and_overwrites(store: Store) -> None:
    await seed(store)
    scope = PermissionScope(store)
    assert await scope.visible_channels(viewer()) == {"10", "11"}
    assert await scope.visible_channels(viewer(MODS)) == {"10", "11", "12", "20", "21"}
    assert await scope.visible_channels(viewer(ADMINS)) == {"10", "11", "12", "20", "21", "30"}


async def test_unsynced_role_opens_nothing(store: Store) -> None:
    await seed(store)
    assert await PermissionScope(store).visible_channels(viewer("999")) == {"10", "11"}


async def test_owner_sees_every_message_channel(store: Store) -> None:
    await seed(store)
    owner = Viewer(
        guild_id=GUILD, user_id=USER, role_ids=frozenset(), channel_id="10", owner_id=USER
    )
    everything = {"10", "11", "12", "20", "21", "30"}
    assert await PermissionScope(store).visible_channels(owner) == everything


async def test_interaction_permissions_decide_the_invoking_channel(store: Store) -> None:
    await seed(store)
    scope = PermissionScope(store)
    # Live permissions say the member lost history in #general since the last sync.
    assert await scope.visible_channels(viewer(permissions=VIEW_CHANNEL)) == set()
    assert await scope.channel_scope(viewer(permissions=VIEW_CHANNEL)) == set()
    # ...or gained MANAGE_THREADS there: its private thread opens up, nothing else does.
    live = READ_ACCESS | MANAGE_THREADS
    assert await scope.visible_channels(viewer(permissions=live)) == {"10", "11", "12"}


async def test_channel_scope_is_the_channel_and_its_readable_threads(store: Store) -> None:
    await seed(store)
    scope = PermissionScope(store)
    assert await scope.channel_scope(viewer(permissions=READ_ACCESS)) == {"10", "11"}
    assert await scope.channel_scope(viewer(MODS)) == {"10", "11", "12"}
    assert await scope.channel_scope(viewer(channel="30")) == set()
    # Invoked inside a private thread: the invocation proves the thread itself visible.
    assert await scope.channel_scope(viewer(channel="12", permissions=READ_ACCESS)) == {"12"}
    assert await scope.channel_scope(viewer(channel="12")) == {"12"}


async def test_without_stored_roles_only_the_interaction_counts(store: Store) -> None:
    await store.upsert_channels([text("10"), thread("11", "10"), text("50")])
    scope = PermissionScope(store)
    assert await scope.visible_channels(viewer(permissions=READ_ACCESS)) == {"10", "11"}
    assert await scope.visible_channels(viewer()) == set()
    assert await scope.channel_scope(viewer()) == set()


async def test_unsynced_invoking_channel_rests_on_the_interaction(store: Store) -> None:
    await seed(store)
    scope = PermissionScope(store)
    assert await scope.channel_scope(viewer(channel="77", permissions=READ_ACCESS)) == {"77"}
    assert await scope.channel_scope(viewer(channel="77")) == set()


async def test_thread_stored_under_another_guild_is_left_out(store: Store) -> None:
    await seed(store)
    stray = ChannelRecord(id="13", guild_id="999", name="stray", type=PUBLIC_THREAD, parent_id="10")
    await store.upsert_channels([stray])
    assert await PermissionScope(store).channel_scope(viewer(permissions=READ_ACCESS)) == {
        "10",
        "11",
    }
