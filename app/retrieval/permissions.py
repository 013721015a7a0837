"""Which channels a member may read: Discord's permission rules over the stored roles and channels.

Retrieval must never return a message from a channel its asker cannot read, so every search is
limited to a set of channel ids computed here.

The computation follows Discord's documented order
(https://discord.com/developers/docs/topics/permissions#permission-overwrites):

1. Base permissions: the guild owner holds every permission. Otherwise the @everyone role (whose
   id is the guild id) OR every role of the member; ADMINISTRATOR there grants every permission
   and no overwrite can take it away. A role id we hold no record of grants nothing.
2. Channel overwrites, in three steps: the @everyone overwrite (deny, then allow); the overwrites
   of all the member's roles together (deny the union of their denies, then allow the union of
   their allows, so among roles an allow beats a deny); the member's own overwrite (deny, then
   allow).
3. Implicit rule: without VIEW_CHANNEL a member holds nothing in the channel. (Discord's other
   implicit rules, around SEND_MESSAGES and timeouts, never take away reading, so they are left
   out.)

Reading stored messages takes both VIEW_CHANNEL and READ_MESSAGE_HISTORY: without history the
member sees only what is posted while they watch, never the past we index.

Threads have no overwrites of their own: they take their parent's permissions. A private thread is
shown in Discord to its members and to those with MANAGE_THREADS in the parent; thread membership
is not stored, so here a private thread is readable only with MANAGE_THREADS (administrators and
the owner hold it). The one exception is the thread a command is invoked in, which the interaction
itself proves visible.

What the interaction proves: Discord sends the member's permissions in the invoking channel,
computed from live data. For that channel (and for the threads under it, which inherit those
permissions) they are used instead of the stored roles and overwrites, which may be stale. When
no roles are stored for the guild yet, nothing beyond the invoking channel and its threads is
returned: without roles no other channel's permissions can be known. An interaction does not
say who owns the guild, so ownership counts only when the caller passes `owner_id`; nor is an
ADMINISTRATOR bit in the invoking channel's permissions taken as guild-wide, since only the
stored roles can show where it comes from.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from app.discord.permissions import (
    ADMINISTRATOR,
    ALL_PERMISSIONS,
    MANAGE_THREADS,
    READ_ACCESS,
    VIEW_CHANNEL,
)
from app.store.db import Store
from app.store.models import (
    ANNOUNCEMENT_THREAD,
    GUILD_ANNOUNCEMENT,
    GUILD_TEXT,
    PRIVATE_THREAD,
    PUBLIC_THREAD,
    ChannelRecord,
    RoleRecord,
)

logger = logging.getLogger(__name__)


# Overwrite types.
ROLE_OVERWRITE = 0
MEMBER_OVERWRITE = 1

# The channel kinds whose messages are synced; any other kind is never in a scope.
MESSAGE_CHANNEL_TYPES = frozenset(
    {GUILD_TEXT, GUILD_ANNOUNCEMENT, ANNOUNCEMENT_THREAD, PUBLIC_THREAD, PRIVATE_THREAD}
)


@dataclass(frozen=True, slots=True)
class Member:
    """A guild member as far as permissions go: user id, role ids, ownership of the guild."""

    user_id: str
    role_ids: frozenset[str]
    is_owner: bool = False


@dataclass(frozen=True, slots=True)
class Viewer:
    """The member a retrieval is for, and what their interaction proves.

    `channel_permissions` is the interaction's `member.permissions` (Discord's computed
    permissions in `channel_id`), or None when not known.
    """

    guild_id: str
    user_id: str
    role_ids: frozenset[str]
    channel_id: str
    channel_permissions: int | None = None
    owner_id: str | None = None

    @property
    def member(self) -> Member:
        """The member these fields describe."""
        return Member(
            user_id=self.user_id,
            role_ids=self.role_ids,
            is_owner=self.owner_id is not None and self.owner_id == self.user_id,
        )


def role_permissions(roles: Iterable[RoleRecord]) -> dict[str, int]:
    """Each role's permission bits by role id."""
    return {role.id: role.permissions for role in roles}


def compute_base_permissions(guild_id: str, roles: Mapping[str, int], member: Member) -> int:
    """The member's guild-wide permissions: @everyone OR their roles; owner and admin hold all."""
    if member.is_owner:
        return ALL_PERMISSIONS
    permissions = roles.get(guild_id, 0)
    for role_id in member.role_ids:
        permissions |= roles.get(role_id, 0)
    if permissions & ADMINISTRATOR:
        return ALL_PERMISSIONS
    return permissions


def compute_overwrites(base: int, guild_id: str, member: Member, channel: ChannelRecord) -> int:
    """Apply a channel's overwrites to base permissions: @everyone, then roles, then member."""
    if base & ADMINISTRATOR:
        return ALL_PERMISSIONS
    permissions = base
    allow = deny = 0
    for overwrite in channel.permission_overwrites:
        if overwrite.type == ROLE_OVERWRITE and overwrite.id == guild_id:
            permissions = (permissions & ~overwrite.deny) | overwrite.allow
        # @everyone is kept out of the role step: there its allow would beat a role's deny.
        elif overwrite.type == ROLE_OVERWRITE and overwrite.id in member.role_ids:
            allow |= overwrite.allow
            deny |= overwrite.deny
    permissions = (permissions & ~deny) | allow
    for overwrite in channel.permission_overwrites:
        if overwrite.type == MEMBER_OVERWRITE and overwrite.id == member.user_id:
            permissions = (permissions & ~overwrite.deny) | overwrite.allow
    if not permissions & VIEW_CHANNEL:
        return 0
    return permissions


def compute_permissions(
    guild_id: str, roles: Mapping[str, int], member: Member, channel: ChannelRecord
) -> int:
    """The member's permissions in a channel that is not a thread (pass a thread's parent)."""
    if channel.guild_id != guild_id:
        return 0
    base = compute_base_permissions(guild_id, roles, member)
    return compute_overwrites(base, guild_id, member, channel)


def can_read(channel: ChannelRecord, permissions: int) -> bool:
    """Whether permissions in a channel (for a thread: in its parent) let its history be read."""
    if permissions & READ_ACCESS != READ_ACCESS:
        return False
    return channel.type != PRIVATE_THREAD or bool(permissions & MANAGE_THREADS)


def readable_channels(
    guild_id: str,
    roles: Mapping[str, int],
    member: Member,
    channels: Iterable[ChannelRecord],
) -> set[str]:
    """The ids of the message channels and threads among `channels` the member can read."""
    by_id = {c.id: c for c in channels}
    found: set[str] = set()
    for channel in by_id.values():
        if channel.type not in MESSAGE_CHANNEL_TYPES or channel.guild_id != guild_id:
            continue
        source = by_id.get(channel.parent_id or "") if channel.is_thread else channel
        # A thread whose parent we never stored has unknown permissions: hidden.
        if source is None or source.is_thread:
            continue
        if can_read(channel, compute_permissions(guild_id, roles, member, source)):
            found.add(channel.id)
    return found


class PermissionScope:
    """Computes, from the store, the channel ids a viewer's retrieval may search."""

    def __init__(self, store: Store) -> None:
        self._store = store

    async def channel_scope(self, viewer: Viewer) -> set[str]:
        """The invoking channel and its threads, as far as the viewer can read them."""
        channel = await self._store.get_channel(viewer.channel_id)
        permissions = viewer.channel_permissions
        if permissions is None:
            permissions = await self._stored_permissions(viewer, channel)
        if permissions & READ_ACCESS != READ_ACCESS:
            found: set[str] = set()
        else:
            # The invoking channel itself is proven visible, even a private thread.
            found = {viewer.channel_id}
            for thread in await self._store.threads_of(viewer.channel_id):
                in_guild = thread.guild_id == viewer.guild_id
                if in_guild and thread.is_thread and can_read(thread, permissions):
                    found.add(thread.id)
        logger.debug(
            "channel scope of user %s in %s: %d channels",
            viewer.user_id,
            viewer.channel_id,
            len(found),
        )
        return found

    async def visible_channels(self, viewer: Viewer) -> set[str]:
        """Every synced channel and thread of the guild the viewer can read (server scope)."""
        roles = role_permissions(await self._store.roles_for_guild(viewer.guild_id))
        found = await self.channel_scope(viewer)
        if roles:
            channels = await self._store.channels_for_guild(viewer.guild_id)
            # channel_scope has decided the invoking channel and its threads, from the live
            # permissions when the interaction carried them; the store may be staler.
            decided = {viewer.channel_id} | {
                c.id for c in channels if c.is_thread and c.parent_id == viewer.channel_id
            }
            readable = readable_channels(viewer.guild_id, roles, viewer.member, channels)
            found |= readable - decided
        else:
            logger.info(
                "no roles stored for guild %s: server scope limited to channel %s",
                viewer.guild_id,
                viewer.channel_id,
            )
        logger.debug(
            "server scope of user %s in guild %s: %d channels",
            viewer.user_id,
            viewer.guild_id,
            len(found),
        )
        return found

    async def _stored_permissions(self, viewer: Viewer, channel: ChannelRecord | None) -> int:
        """The viewer's permissions in a channel (a thread's: its parent's) from stored data."""
        if channel is not None and channel.is_thread:
            channel = await self._store.get_channel(channel.parent_id or "")
        if channel is None or channel.is_thread:
            return 0
        roles = role_permissions(await self._store.roles_for_guild(viewer.guild_id))
        if not roles:
            return 0
        return compute_permissions(viewer.guild_id, roles, viewer.member, channel)
