"""The web process: the Starlette app, its HTTP protocol and the front door's metrics.

`application.create_app` builds the app (/interactions, /health, /metrics);
`protocol` answers /interactions straight from uvicorn's parser callbacks;
`metrics` counts without locks on the event loop. The web process is stateless
and must never import torch, chromadb or llama_cpp: it cold-starts on every
scale-up and Discord gives it three seconds.
"""
