# The BillingWatch exporter: `billingwatch serve` on 0.0.0.0:9786 as a non-root user. It answers
# only the Host names in BILLINGWATCH_ALLOWED_HOSTS: add the name Prometheus scrapes it by.
# The runtime dependencies are the pinned, hash-checked ones of requirements/runtime.lock
# (scripts/lock.sh), then our wheel without dependencies: the image builds the same tomorrow.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY exporter ./exporter
RUN pip wheel --no-cache-dir --disable-pip-version-check --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    BILLINGWATCH_HOST=0.0.0.0 \
    BILLINGWATCH_PORT=9786 \
    BILLINGWATCH_ALLOWED_HOSTS=localhost,127.0.0.1,[::1]
COPY requirements/runtime.lock /tmp/runtime.lock
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --disable-pip-version-check --require-hashes -r /tmp/runtime.lock \
    && pip install --no-cache-dir --disable-pip-version-check --no-deps /wheels/billingwatch-*.whl \
    && pip check \
    && rm -rf /wheels /tmp/runtime.lock \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin billingwatch
USER 10001
EXPOSE 9786
# The slim image has no curl: ask /health with the Python that is already there.
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('BILLINGWATCH_PORT', '9786'), timeout=2)"]
ENTRYPOINT ["billingwatch"]
CMD ["serve"]
