"""The front door's core: verify, parse and admit interactions, framework-free.

`endpoint.InteractionEndpoint` turns (body, signature, timestamp) into a
response; `verify` checks the Ed25519 signature, `models` and `invocation`
parse what Discord sent, `commands` holds the slash commands' definitions, and
`admission` rate-limits and enqueues in one Redis round trip.
"""
