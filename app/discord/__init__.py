"""Discord itself: the REST client and its rate limits, and the shapes Discord's data comes in.

`rest` (with `routes`, `ratelimit` and `errors`) talks to Discord's REST API,
`files` shapes the uploads that ride on a message;
`payloads` maps its JSON messages, channels and roles onto the store's records,
as `exporter` does for DiscordChatExporter files; `snowflakes` and
`permissions` are Discord's ids and permission bits, spelled once.
"""
