# The statesync sidecar. Build: docker build -t statesync .
# Runs as a non-root user whose uid/gid match the Icinga 2 user of the image beside it
# (5665 for the official icinga/icinga2 image; check `id nagios` in Debian-based ones
# and pass --build-arg ICINGA_UID=... ICINGA_GID=...), so it reads and writes the
# shared volume with the same ownership. Works with a read-only root filesystem: it
# writes only to the shared volume.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY statesync ./statesync
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ARG ICINGA_UID=5665
ARG ICINGA_GID=5665
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STATESYNC_LOG_FORMAT=json \
    STATESYNC_HTTP_BIND=0.0.0.0 \
    STATESYNC_HTTP_PORT=9465
RUN groupadd --gid "$ICINGA_GID" icinga \
    && useradd --uid "$ICINGA_UID" --gid icinga --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin icinga
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER icinga
EXPOSE 9465
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:9465/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["statesync"]
CMD ["run"]
