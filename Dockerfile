# Assay API (and, from the run engine on, its workers). Build: docker build -t assay .
FROM python:3.11-slim AS base

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    PATH=/opt/venv/bin:$PATH

RUN pip install --no-cache-dir uv \
 && useradd --create-home --uid 10001 assay

WORKDIR /app
# Dependencies first, so source edits don't reinstall them.
COPY pyproject.toml uv.lock ./
RUN uv sync --locked --no-dev --no-install-project

COPY app ./app
COPY database ./database
COPY migrations ./migrations
COPY notifications ./notifications
COPY providers ./providers
COPY tasks ./tasks
COPY utils ./utils
COPY alembic.ini ./

USER assay
ENV ASSAY_HOST=0.0.0.0 \
    ASSAY_LOG_FORMAT=json \
    ASSAY_DATA_DIR=/home/assay/data \
    PORT=8000
EXPOSE 8000

HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
  CMD python -c "import os,urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ[\"PORT\"]}/health', timeout=4)"

CMD ["python", "-m", "app", "serve"]
