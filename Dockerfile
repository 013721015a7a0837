# One image for both processes: `docker run IMAGE web` or `docker run IMAGE worker`.
# Build: docker build -t discord-history-assistant .

# --- builder: compiles llama-cpp-python and prepares the models --------------------------
FROM python:3.11-slim AS builder
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential cmake \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md health.py ./
COPY app ./app
COPY workers ./workers
COPY scripts/install.sh ./scripts/install.sh
ENV VENV=/opt/venv \
    MODEL_HOME=/opt/models \
    MODEL_CACHE_DIR=/opt/models/embedder \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    ANONYMIZED_TELEMETRY=False
RUN sh scripts/install.sh

# --- runtime: no compiler, a non-root user, writes only to /data and /tmp ----------------
FROM python:3.11-slim AS runtime
# llama.cpp's OpenMP runtime (a shared library, not a compiler).
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /tmp --shell /usr/sbin/nologin assistant \
    && mkdir /data \
    && chown assistant /data
COPY --from=builder /opt/venv /opt/venv
COPY --from=builder /opt/models /opt/models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    ANONYMIZED_TELEMETRY=False \
    DATA_DIR=/data \
    MODEL_PATH=/opt/models/.cache/discord-history-assistant/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf \
    MODEL_CACHE_DIR=/opt/models/embedder \
    PORT=8080 \
    METRICS_PORT=9091
USER assistant
WORKDIR /tmp
VOLUME ["/data"]
EXPOSE 8080 9091
# The web process answers /health; a worker container answers its metrics port instead.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "health"]
ENTRYPOINT ["python", "-m", "app"]
CMD ["web"]
