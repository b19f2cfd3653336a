# The BillingWatch exporter: `billingwatch serve` on 0.0.0.0:9786 as a non-root user. It answers
# only the Host names in BILLINGWATCH_ALLOWED_HOSTS: add the name Prometheus scrapes it by.
# Only the runtime dependencies of pyproject.toml are installed (no test extras).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY exporter ./exporter
RUN pip wheel --no-cache-dir --disable-pip-version-check --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BILLINGWATCH_HOST=0.0.0.0 \
    BILLINGWATCH_PORT=9786 \
    BILLINGWATCH_ALLOWED_HOSTS=localhost,127.0.0.1,[::1]
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --disable-pip-version-check --no-index --find-links=/wheels billingwatch \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin billingwatch
USER 10001
EXPOSE 9786
# The slim image has no curl: ask /health with the Python that is already there.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('BILLINGWATCH_PORT', '9786'), timeout=2)"]
ENTRYPOINT ["billingwatch"]
CMD ["serve"]
