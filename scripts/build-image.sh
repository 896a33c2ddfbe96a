#!/usr/bin/env bash
# Build the container image (`make image`) with podman, or with docker where its daemon runs.
#   IMAGE       the tag to build            (default: localhost/vae-serving:<version>)
#   BASE_IMAGE  the runtime and build base  (default: the Dockerfile's, python:3.11-slim)
#   ENGINE      podman or docker            (default: podman if installed, else docker)
# Extra arguments go to the engine's `build`, e.g. scripts/build-image.sh --no-cache.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

version=$(python3 -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['project']['version'])")
image=${IMAGE:-localhost/vae-serving:$version}
ca_bundle=/etc/ssl/certs/ca-certificates.crt

if [ -z "${ENGINE:-}" ]; then
    if command -v podman >/dev/null 2>&1; then
        ENGINE=podman
    elif command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
        ENGINE=docker
    else
        echo "build-image: neither podman nor a running docker found (scripts/install-tools.sh installs podman)" >&2
        exit 1
    fi
fi

if [ ! -d models/vae-mnist ]; then
    echo "build-image: models/vae-mnist is missing: the image bundles it (make model)" >&2
    exit 1
fi

args=(build --tag "$image")
if [ -n "${BASE_IMAGE:-}" ]; then
    args+=(--build-arg "BASE_IMAGE=$BASE_IMAGE")
fi

case "$ENGINE" in
    podman)
        # Podman's OCI format drops HEALTHCHECK; the docker format keeps it.
        args+=(--format docker)
        if [ -f "$root/.tools/containers.conf" ]; then
            export CONTAINERS_CONF="$root/.tools/containers.conf"
        fi
        # Where the registries are reached only through the host's proxy, pip in the build
        # needs the host's CA bundle, mounted where the Dockerfile's PIP_CERT points.
        if [ -f "$ca_bundle" ]; then
            args+=(--volume "$ca_bundle:$ca_bundle:ro")
        fi
        ;;
    docker) ;;
    *)
        echo "build-image: ENGINE must be podman or docker, not '$ENGINE'" >&2
        exit 1
        ;;
esac

if ! "$ENGINE" "${args[@]}" "$@" .; then
    if [ -z "${BASE_IMAGE:-}" ]; then
        echo "build-image: no registry to pull python:3.11-slim from? scripts/install-tools.sh" \
            "makes an offline base: BASE_IMAGE=localhost/py-base:bookworm make image" >&2
    fi
    exit 1
fi
echo "build-image: built $image with $ENGINE" >&2
