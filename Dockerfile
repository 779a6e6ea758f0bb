# The statesync sidecar. Build: docker build -t statesync .
# Runs as a non-root user whose uid/gid match the Icinga 2 user of the image beside it
# (5665 for the official icinga/icinga2 image; check `id nagios` in Debian-based ones
# and pass --build-arg ICINGA_UID=... ICINGA_GID=...), so it reads and writes the
# shared volume with the same ownership. Works with a read-only root filesystem: it
# writes only to the shared volume.
#
# PYTHON_IMAGE picks the base; the default is the public image users pull. The test
# suite points it at a locally built stand-in (tests/images/), since its machines reach
# no registry.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY statesync ./statesync
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ARG ICINGA_UID=5665
ARG ICINGA_GID=5665
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    STATESYNC_LOG_FORMAT=json \
    STATESYNC_HTTP_BIND=0.0.0.0 \
    STATESYNC_HTTP_PORT=9465
# /data belongs to the Icinga user because Docker gives a new named volume the owner of the
# directory it is first mounted on: when statesync is the first container on the volume,
# a /data missing here would leave the volume owned by root and Icinga unable to write it.
RUN groupadd --gid "$ICINGA_GID" icinga \
    && useradd --uid "$ICINGA_UID" --gid icinga --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin icinga \
    && install -d -o icinga -g icinga -m 0755 /data
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER icinga
EXPOSE 9465
# `statesync health` asks the port and address the configuration gives (STATESYNC_HTTP_PORT,
# the config file, ...), so moving the port cannot mark a healthy sidecar unhealthy.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 CMD ["statesync", "health"]
ENTRYPOINT ["statesync"]
CMD ["run"]
