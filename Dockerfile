# The Airflow image with istio-canary installed: pinned requirements, then the package itself
# (which registers the plugin through its entry point). `docker build .` builds this image
# (the last stage); docker-compose.yaml also builds the `sandbox` stage for its sandbox profile.
FROM apache/airflow:3.3.2-python3.11 AS airflow-base
COPY --chown=airflow:root requirements.txt /opt/istio-canary/requirements.txt
RUN pip install --no-cache-dir -r /opt/istio-canary/requirements.txt
COPY --chown=airflow:root pyproject.toml /opt/istio-canary/pyproject.toml
COPY --chown=airflow:root plugins/istio_canary /opt/istio-canary/plugins/istio_canary
RUN pip install --no-cache-dir --no-deps /opt/istio-canary

# The local sandbox (`python -m sandbox up`: Kubernetes API stand-in, traffic generator and the
# Prometheus it starts as its child) for `docker compose --profile sandbox`. socat relays fixed
# ports on the compose network to the sandbox, which listens on 127.0.0.1 only.
FROM airflow-base AS sandbox
USER root
RUN apt-get update \
    && apt-get install -y --no-install-recommends socat \
    && apt-get clean && rm -rf /var/lib/apt/lists/*
# Prometheus' own static build (no Debian service scripts in the image).
COPY --from=prom/prometheus:v2.53.1 /bin/prometheus /usr/local/bin/prometheus
COPY --chown=airflow:root sandbox /opt/istio-canary/sandbox
# `.sandbox`, the CLI's default state dir, so `python -m sandbox status|set` need no flags.
RUN install -d -o airflow -g root /opt/istio-canary/.sandbox
USER airflow
WORKDIR /opt/istio-canary
ENV PYTHONPATH=/opt/istio-canary

FROM airflow-base AS airflow
