"""What every history command shares: the channels the member may read, and quoting.

Every command first decides which channels the invoking member may read
(`PermissionScope`), and nothing outside that set is ever retrieved, quoted or
linked. Links to sources come from the retrieved rows, never from the model's
text.
"""

from __future__ import annotations

from collections.abc import Sequence

from app.commands.resources import Resources
from app.errors import CommandError
from app.interactions.invocation import Invocation
from app.llm.prompts import Quote
from app.retrieval.permissions import PermissionScope, Viewer
from app.store.models import ChannelAccess, StoredMessage

NOTHING_SYNCED = (
    "I have no history for this channel yet. Someone with Manage Server can run `/sync` here, "
    "or the owner can add this server to SYNC_GUILD_IDS."
)


async def permitted_channels(
    resources: Resources, invocation: Invocation, channel_id: str | None = None
) -> set[str]:
    """The channels this member may read for this command's scope.

    With `channel_id` (/search's channel option): that channel and its threads, as far as
    the member may read them there; a channel they cannot read is an error, not an empty set.
    """
    if invocation.guild_id is None:
        raise CommandError("this command works in a server's channels only")
    store = resources.state.store
    if channel_id is not None and channel_id != invocation.channel_id:
        channel = await store.get_channel(channel_id)
        if channel is None or channel.guild_id != invocation.guild_id:
            raise CommandError("I have no history of that channel; it may not be synced yet")
        viewer = Viewer(
            guild_id=invocation.guild_id,
            user_id=invocation.user_id,
            role_ids=frozenset(invocation.member_roles),
            channel_id=channel_id,
            # Discord sent the member's permissions in the invoking channel only.
            channel_permissions=None,
        )
        found = await PermissionScope(store).channel_scope(viewer)
        confirmed = await store.channels_with_access(invocation.guild_id, ChannelAccess.OK)
        found = {c for c in found if c in confirmed}
        if not found:
            raise CommandError("you cannot read that channel, so I cannot search it for you")
        return found
    if invocation.options.get("scope") != "server":
        return await PermissionScope(store).channel_scope(_viewer(invocation))
    return await server_channels(resources, invocation)


async def server_channels(resources: Resources, invocation: Invocation) -> set[str]:
    """Every channel of the server this member may read (`/ask scope:server`, "Find related")."""
    if invocation.guild_id is None:
        raise CommandError("this command works in a server's channels only")
    visible = await PermissionScope(resources.state.store).visible_channels(_viewer(invocation))
    # A channel known only from an import carries no permission overwrites yet: it is
    # shown beyond its own channel only once a sync has read its real permissions.
    confirmed = await resources.state.store.channels_with_access(
        invocation.guild_id, ChannelAccess.OK
    )
    return {c for c in visible if c in confirmed or c == invocation.channel_id}


def _viewer(invocation: Invocation) -> Viewer:
    """The member as seen from the invoking channel, with the permissions Discord sent."""
    assert invocation.guild_id is not None  # callers refuse commands outside a server
    return Viewer(
        guild_id=invocation.guild_id,
        user_id=invocation.user_id,
        role_ids=frozenset(invocation.member_roles),
        channel_id=invocation.channel_id,
        channel_permissions=invocation.permissions,
    )


async def quotes(resources: Resources, messages: Sequence[StoredMessage]) -> list[Quote]:
    """The messages as the model is shown them: author, channel name, time and text."""
    names: dict[str, str] = {}
    for channel_id in {m.channel_id for m in messages}:
        channel = await resources.state.store.get_channel(channel_id)
        names[channel_id] = channel.name if channel else channel_id
    return [
        Quote(
            author=m.author_name or m.author_id,
            channel=names[m.channel_id],
            timestamp=m.timestamp,
            text=m.index_text,
        )
        for m in messages
    ]


def snippet(text: str, limit: int) -> str:
    """`text` on one line, cut to `limit` characters with an ellipsis."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"
