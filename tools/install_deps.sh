#!/usr/bin/env bash
# Installs every Debian 12 package jetserve needs to build, run and test. Run as root.
#   install_deps.sh          build + test dependencies (what CI and developers need)
#   install_deps.sh --build  only what building the binary needs (container images)
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
packages=(
  cmake g++ make ninja-build pkg-config git ca-certificates
  libabsl-dev libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libspdlog-dev libfmt-dev prometheus-cpp-dev nlohmann-json3-dev libpcre2-dev libicu-dev
  libcpp-httplib-dev libssl-dev
  libgtest-dev libgmock-dev
)
if [[ "${1:-}" != "--build" ]]; then
  packages+=(python3 python3-numpy python3-torch python3-grpcio python3-protobuf python3-jinja2)
  # The security tests (tests/server/test_security.py) make throwaway certificates with it.
  packages+=(openssl)
  # The deployment checks (tests/deploy): yamllint, promtool (Debian ships it in prometheus).
  packages+=(yamllint python3-yaml prometheus)
  # The sanitizer and fuzz builds (tools/test.sh): clang with its sanitizer and libFuzzer
  # runtimes, and llvm-symbolizer (in llvm-14) so that reports show functions and lines.
  packages+=(clang-14 libclang-rt-14-dev llvm-14)
  # Node.js runs the end-to-end tests that use the official `openai` npm client. A machine that
  # already has Node.js (with its own npm) keeps it; otherwise Debian's packages provide both.
  command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
  # tools/gpu_bundle.sh (tested by tests/gpu/bundle_test.sh) packs with xz.
  packages+=(xz-utils)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "installing: ${missing[*]}" >&2
  # Debian's prometheus package starts a Prometheus server from its init script unless a
  # policy forbids starting services; the tests only want its promtool binary.
  if [[ ! -e /usr/sbin/policy-rc.d ]]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if [[ "${1:-}" != "--build" ]]; then
  # The npm packages of the Node tests (tests/deploy: Kubernetes schemas; tests/openai: the
  # official openai client), exactly as each package-lock.json pins them; reinstalled only when
  # the lock file changed since the last install.
  for dir in deploy openai; do
    node_tests=$(cd "$(dirname "$0")/../tests/$dir" && pwd)
    if ! cmp -s "$node_tests/package-lock.json" "$node_tests/node_modules/.jetserve-lock"; then
      (cd "$node_tests" && npm ci --no-audit --no-fund --loglevel=error)
      cp "$node_tests/package-lock.json" "$node_tests/node_modules/.jetserve-lock"
    fi
  done
fi
