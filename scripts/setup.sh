#!/usr/bin/env bash
# Idempotent set-up on Debian as root: system packages for the lab VM, BCC and the module
# build, then the project venv. The venv is made from Debian's /usr/bin/python3 with system
# site-packages, because Debian's python3-bpfcc (bcc) exists only for that interpreter.
# With --test (make test): also Debian's chromium, which tests/test_report.py opens the HTML
# report in (headless).
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(qemu-system-x86 linux-image-amd64 linux-headers-amd64 python3-bpfcc bpfcc-tools
              busybox-static build-essential python3-venv kmod procps util-linux
              linux-source-6.1)
if [ "${1:-}" = "--test" ]; then
    APT_PACKAGES+=(chromium)
fi

missing=()
for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "setup: missing packages (${missing[*]}); run 'make setup' as root" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}"
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

# A second lab kernel, Debian 12's 6.12 series, so the module and probes are tested on 6.1 and
# 6.12+. The package names carry the version, so take the newest one the archive offers.
if ! ls /lib/modules/6.12.*/build >/dev/null 2>&1; then
    [ -n "$(apt-cache search --names-only '^linux-headers-6\.12\.' 2>/dev/null)" ] || apt-get update -q
    v=$(apt-cache search --names-only '^linux-headers-6\.12\.[0-9]+\+deb12-amd64$' \
        | awk '{print $1}' | sed 's/^linux-headers-//' | sort -V | tail -n 1)
    if [ -n "$v" ]; then
        echo "setup: installing lab kernel $v"
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "linux-image-$v-unsigned" "linux-headers-$v"
    else
        echo "setup: no 6.12 kernel in the archive; the lab runs on 6.1 only" >&2
    fi
fi

if [ ! -x .venv/bin/python ] || ! .venv/bin/python -c 'import bcc' 2>/dev/null; then
    rm -rf .venv
    /usr/bin/python3 -m venv --system-site-packages .venv
fi
if ! .venv/bin/python -c 'import nlperf, virtme_ng, pytest, ruff' 2>/dev/null \
        || [ pyproject.toml -nt .venv/.installed ]; then
    .venv/bin/pip install -q -e '.[dev]'
    touch .venv/.installed
fi
echo "setup: ok ($(.venv/bin/python --version), bcc $(.venv/bin/python -c 'import bcc; print(bcc.__version__)'))"
