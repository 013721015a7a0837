"""Finding the messages that answer a query, only in channels the member may read.

`embedder` computes MiniLM vectors (ONNX), `index` keeps them in Chroma,
`scan` searches a channel's vectors directly, `search.Retriever` returns the
best messages and passages, and `permissions` decides which channels a member
can view.
"""
