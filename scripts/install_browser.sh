#!/usr/bin/env bash
# Install a headless browser (Chromium, from Debian's packages) for the report test
# (neuro_trigger_tests/test_report.py). Prints the browser's path and exits 0 when one is there;
# exits 1 with a reason on stderr where none can be installed (not root, no apt-get, no network).
# Usage: scripts/install_browser.sh        (CI runs as root on a fresh Debian machine)
set -u

find_browser() {
    for name in chromium chromium-browser google-chrome-stable google-chrome; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    return 1
}

if find_browser; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "no chromium and no apt-get to install it with" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "no chromium, and installing it with apt-get needs root (run: sudo $0)" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -qq >/dev/null 2>&1; then
    echo "apt-get update failed (offline?): cannot install chromium" >&2
    exit 1
fi
if ! apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null 2>&1; then
    echo "apt-get install chromium failed" >&2
    exit 1
fi
if find_browser; then
    exit 0
fi
echo "chromium was installed but is not on PATH" >&2
exit 1
