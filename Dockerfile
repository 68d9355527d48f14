# nanogpt-gateway: one gateway process per container (scale with replicas, not workers).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install . \
    && useradd --system --uid 10001 --no-create-home gateway \
    && mkdir -p /var/lib/nanogpt-gateway \
    && chown gateway /var/lib/nanogpt-gateway

COPY config/gateway.example.toml /etc/nanogpt-gateway/gateway.example.toml
USER gateway
# The default ledger_path is relative: the usage ledger lands here. Keep it on a volume.
WORKDIR /var/lib/nanogpt-gateway
VOLUME /var/lib/nanogpt-gateway
EXPOSE 8080

HEALTHCHECK --interval=15s --timeout=3s --start-period=5s --retries=3 \
    CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status != 200)"]

# Mount your config at /etc/nanogpt-gateway/gateway.toml and pass NANOGPT_API_KEY;
# members reach the container, so it listens on all interfaces.
# Try it without either: docker run -p 8080:8080 IMAGE serve --demo --host 0.0.0.0
ENTRYPOINT ["nanogpt-gateway"]
CMD ["serve", "--config", "/etc/nanogpt-gateway/gateway.toml", "--host", "0.0.0.0", "--port", "8080"]
