# vae-serving: the gRPC server with the bundled default model (models/vae-mnist).
#   podman build -t vae-serving .          (or: make image)
# BASE_IMAGE is any Debian-like image with python3 >= 3.11 and its venv module at the same
# path in both stages, e.g. python:3.11-slim or a debootstrap image with python3-venv.
ARG BASE_IMAGE=python:3.11-slim

# ---- build: build the wheels; /opt/venv gets the dependencies and /opt/app the service and the
# contract (package vae, from the client distribution), so that a code change leaves the large
# dependency layer untouched ----
FROM ${BASE_IMAGE} AS build
# The CA bundle pip trusts; a build behind an intercepting proxy mounts the host's bundle here.
ARG PIP_CERT=/etc/ssl/certs/ca-certificates.crt
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=180
WORKDIR /src

# The pins live in pyproject.toml only; binary wheels only, so no compiler is ever needed. The
# runtime venv then loses pip, setuptools and the libraries' own test suites (about 30 MB), and
# a .pth file puts /opt/app on its path. pip compiles the bytecode at install time, which
# matters on a read-only root filesystem.
COPY pyproject.toml ./
RUN python3 -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
open('/tmp/runtime.txt', 'w').write('\n'.join(p['dependencies']))" \
    && python3 -m venv /opt/build \
    && python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir --only-binary=:all: -r /tmp/runtime.txt \
    && /opt/venv/bin/python -m pip uninstall --yes --quiet pip setuptools \
    && find /opt/venv -depth -type d -name tests -exec rm -rf {} + \
    && /opt/venv/bin/python -c "import sysconfig; \
open(sysconfig.get_path('purelib') + '/vae-serving-app.pth', 'w').write('/opt/app\n')"

COPY README.md LICENSE ./
COPY client/ client/
COPY service/ service/
COPY loadtest/ loadtest/
# The client's own dependencies are a subset of the server's, already in /opt/venv.
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /tmp/dist . ./client \
    && /opt/build/bin/pip install --no-cache-dir --no-deps --target /opt/app /tmp/dist/*.whl \
    && rm -rf /opt/app/bin \
    && /opt/venv/bin/python -c "import service, vae.v1.vae_pb2_grpc"

# ---- runtime: the base, the venv, the service and the model; no compilers, no pip, no torch ----
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="vae-serving" \
      org.opencontainers.image.description="A VAE trained on MNIST, served over gRPC with onnxruntime" \
      org.opencontainers.image.licenses="MIT"

# A numeric user, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN useradd --no-log-init --system --uid 10001 --user-group \
        --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin vae

COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/app /opt/app
COPY LICENSE /opt/app/LICENSE
# Root-owned and read-only for the server; mount another directory and set VAE_MODEL_DIR
# to serve a different model.
COPY models/vae-mnist/ /opt/models/vae-mnist/

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    VAE_MODEL_DIR=/opt/models/vae-mnist \
    VAE_GRPC_PORT=50051 \
    VAE_METRICS_PORT=9090
WORKDIR /opt/models
USER 10001:10001
EXPOSE 50051 9090

# Through sh, so the port is read from VAE_GRPC_PORT when the check runs, not at build time.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["sh", "-c", "exec python -m service.healthcheck --target 127.0.0.1:${VAE_GRPC_PORT}"]

# Exec form: python is PID 1 and receives SIGTERM itself, which starts the graceful drain.
ENTRYPOINT ["python", "-m", "service"]
