# VoxCanvas on an NVIDIA GPU. Build: docker compose build   Run: docker compose up -d
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    HF_HOME=/cache/huggingface \
    NUMBA_CACHE_DIR=/tmp/numba \
    DATA_DIR=/data

RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv python3-dev ffmpeg libsndfile1 ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN useradd --create-home --uid 1000 voxcanvas \
 && mkdir -p /app /data /cache/huggingface \
 && chown -R voxcanvas:voxcanvas /app /data /cache

WORKDIR /app
RUN python3 -m venv /opt/venv && chown -R voxcanvas:voxcanvas /opt/venv
ENV PATH=/opt/venv/bin:$PATH

USER voxcanvas
ARG TORCH_PIP_ARGS="torch==2.13.0"
RUN pip install --upgrade pip && pip install $TORCH_PIP_ARGS
COPY --chown=voxcanvas:voxcanvas pyproject.toml README.md ./
COPY --chown=voxcanvas:voxcanvas pipeline ./pipeline
COPY --chown=voxcanvas:voxcanvas bot ./bot
COPY --chown=voxcanvas:voxcanvas cogs ./cogs
COPY --chown=voxcanvas:voxcanvas web ./web
# The development kit (package `devkit`, tests/kit) is part of the distribution; small, never imported at run time.
COPY --chown=voxcanvas:voxcanvas tests/kit ./tests/kit
# EXTRAS="[ray]": the same image serves as a Ray head / GPU worker (compose.yaml profile "ray").
ARG EXTRAS=""
RUN pip install ".${EXTRAS}"

VOLUME ["/data", "/cache/huggingface"]
# The web playground and API (API_PORT). Reachable from outside the container only with
# API_HOST=0.0.0.0, which needs API_KEYS (an open API is served on loopback only).
EXPOSE 8080

# Healthy while GET /healthz answers 200: the Discord gateway connected and heartbeating, the model
# thread alive, the store writable (bot/healthcheck.py; with API_PORT empty only the store is seen).
HEALTHCHECK --interval=60s --timeout=10s --start-period=300s --retries=3 \
  CMD python -m bot.healthcheck || exit 1

CMD ["python", "-m", "bot"]
