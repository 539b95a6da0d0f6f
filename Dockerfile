# Berth's image: a virtual environment built in one stage, copied into a slim runtime stage.
#
#   docker build -t berth .                                         # PyPI, sklearn extra, no models
#   docker build -t berth --build-arg MODELS=registry .             # bake ./registry into /models
#   docker build -t berth --build-arg EXTRAS=sklearn,onnx .         # other extras
#   docker build -t berth --build-arg WHEELS=build/wheels --network none .   # offline, from a wheel-house
#   docker run -p 8000:8000 -v "$PWD/registry:/models:ro" berth intent      # mount models instead
#
# `berth build NAME... --tag TAG` writes the wheel-house and the registry subset for you.
# See docs/deployment.md.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG EXTRAS=sklearn
ARG WHEELS=deploy/docker/empty
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
COPY ${WHEELS} /wheels/
COPY pyproject.toml README.m[d] /src/
COPY src /src/src
COPY deploy/docker/warm_bytecode.py /src/
# A wheel-house with wheels in it means an offline install; otherwise pip uses its index.
# Only the bytecode of what serving imports is compiled (see warm_bytecode.py).
RUN python3 -m venv /opt/berth \
    && if ls /wheels/*.whl >/dev/null 2>&1; then set -- --no-index --find-links /wheels; fi \
    && /opt/berth/bin/pip install --no-compile "$@" "/src[${EXTRAS}]" \
    && /opt/berth/bin/pip uninstall -y -q setuptools pip \
    && find /opt/berth -type d \( -name tests -o -name __pycache__ \) -prune -exec rm -rf {} + \
    && cd /tmp && /opt/berth/bin/python /src/warm_bytecode.py

FROM ${BASE_IMAGE} AS runtime
ARG MODELS=deploy/docker/empty
ARG SERVE_MODELS=""
LABEL org.opencontainers.image.title="Berth" \
      org.opencontainers.image.description="From a trained model file to a fast, safe, observable production API." \
      org.opencontainers.image.licenses="Apache-2.0"
RUN (getent group 10001 || groupadd --system --gid 10001 berth) \
    && (getent passwd 10001 || useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /tmp --shell /usr/sbin/nologin berth) >/dev/null
COPY --from=build /opt/berth /opt/berth
COPY ${MODELS} /models/
ENV PATH=/opt/berth/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    BERTH_REGISTRY=/models \
    BERTH_MODELS=${SERVE_MODELS} \
    BERTH_STATE_DIR=/tmp/berth \
    BERTH_HOST=0.0.0.0 \
    BERTH_PORT=8000
USER 10001:10001
WORKDIR /tmp
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('BERTH_PORT', '8000'), timeout=2)"]
# Exec form: `berth` is PID 1 and receives SIGTERM itself; uvicorn drains and exits.
# (`docker run --init` adds a reaper in front of it if you start helper processes.)
ENTRYPOINT ["berth", "serve"]
CMD []
