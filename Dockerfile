# The Airflow image with istio-canary installed: pinned requirements, then the package itself
# (which registers the plugin through its entry point).
FROM apache/airflow:3.3.2-python3.11
COPY --chown=airflow:root requirements.txt /opt/istio-canary/requirements.txt
RUN pip install --no-cache-dir -r /opt/istio-canary/requirements.txt
COPY --chown=airflow:root pyproject.toml /opt/istio-canary/pyproject.toml
COPY --chown=airflow:root plugins/istio_canary /opt/istio-canary/plugins/istio_canary
RUN pip install --no-cache-dir --no-deps /opt/istio-canary
