# The modelwatch pipeline: the library, its CLI, the dbt project, Prefect.
# docker-compose.yml runs it as the `pipeline` service (docker/pipeline.sh).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MODELWATCH_PROJECT_DIR=/opt/modelwatch \
    MODELWATCH_HOME=/var/lib/modelwatch \
    NML_DISABLE_USAGE_LOGGING=1 \
    DO_NOT_TRACK=1

WORKDIR /opt/modelwatch
COPY . /opt/modelwatch
RUN pip install '.[prefect]' \
 && useradd --system --create-home --home-dir /var/lib/modelwatch modelwatch \
 && chown -R modelwatch /var/lib/modelwatch

USER modelwatch
VOLUME /var/lib/modelwatch
ENTRYPOINT ["/opt/modelwatch/docker/pipeline.sh"]
