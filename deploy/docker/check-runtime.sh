#!/usr/bin/env bash
# What can be checked of the runtime image without a Docker engine: the binary the image
# would carry needs nothing beyond what distroless `cc` ships (glibc, libm, libgcc_s, the
# dynamic loader, CA certificates), runs as a non-root user, and answers --help. Building and
# pushing the image itself needs `docker build` (deploy/docker/Dockerfile).
#
#   deploy/docker/check-runtime.sh [path/to/trickle]
set -euo pipefail
binary="${1:-${CARGO_TARGET_DIR:-target}/debug/trickle}"
[ -x "$binary" ] || { echo "no trickle binary at $binary (cargo build -p trickle)" >&2; exit 1; }

# Shared libraries distroless cc (Debian 12) provides.
allowed='^(linux-vdso\.so|libc\.so|libm\.so|libgcc_s\.so|libdl\.so|libpthread\.so|librt\.so|/lib64/ld-linux-x86-64\.so|/lib/ld-linux-aarch64\.so)'
needed="$(ldd "$binary" | awk '{print $1}')"
extra="$(grep -Ev "$allowed" <<<"$needed" || true)"
if [ -n "$extra" ]; then
  echo "the binary needs libraries distroless cc does not ship:" >&2
  echo "$extra" >&2
  exit 1
fi
echo "runtime libraries: $(tr '\n' ' ' <<<"$needed")— all in distroless cc"

# The image's user (65532) can run it, with nothing writable but /tmp.
if command -v setpriv >/dev/null 2>&1; then
  tmp="$(mktemp -d)"
  cp "$binary" "$tmp/trickle" && chmod 0755 "$tmp" "$tmp/trickle"
  setpriv --reuid=65532 --regid=65532 --clear-groups "$tmp/trickle" --help >/dev/null
  rm -rf "$tmp"
  echo "runs as uid 65532: ok"
fi
