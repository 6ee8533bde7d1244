# One image for the Python services of docker-compose.yml: gateway, luigid and batch.
# The base is a pinned release: upgrading Python is a deliberate edit here, then a rebuild.
FROM python:3.11.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The services run as this user; APP_UID matches the host user owning ./data (bind mounts).
ARG APP_UID=1000
RUN groupadd --gid "${APP_UID}" app \
    && useradd --uid "${APP_UID}" --gid app --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin app

WORKDIR /app
# Dependencies come from pyproject.toml; the source is copied first because setuptools needs the
# packages to install them (.dockerignore keeps data, tests and virtualenvs out).
COPY pyproject.toml README.md luigi.cfg ./
COPY contracts ./contracts
COPY pipeline ./pipeline
COPY gateway ./gateway
COPY scheduler ./scheduler
COPY edge ./edge
COPY dbt ./dbt
COPY deploy/luigi ./deploy/luigi
RUN pip install .[gateway,pipeline] \
    && mkdir -p /data/duckdb /data/parquet /data/gateway /var/lib/luigi \
    && chown app:app /data/duckdb /data/parquet /data/gateway /var/lib/luigi \
    # dbt writes target/ and logs/ inside its project folder.
    && chown -R app:app /app/dbt

USER app
CMD ["python", "-m", "pipeline", "status"]
