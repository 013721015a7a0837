"""The commands as the worker answers them: one module per command (the message-menu
"Summarize from here" lives beside /summarize in `summarize`, "Find related" in `related`).

`handlers.HANDLERS` maps a command's name to its handler; every handler takes
the `Resources` (opened by `resources.open_resources`, the same for the worker
and the command line), the parsed `Invocation` and a `Responder` that delivers
to Discord (`delivery.Reply`) or collects the text for a terminal. `scope`
holds what the history commands share: the channels a member may read;
`target` the message a menu command was run on, as far as it may be used;
`charts` draws /stats's picture.
"""
