#!/usr/bin/env bash
# Prints, one per line, the packages that provide the shared libraries a binary links directly
# (its ELF NEEDED entries), as dpkg knows them on this machine. The container image's runtime
# stage installs exactly this list, so the list follows the build instead of being kept by
# hand, and it works on any dpkg-based builder (Debian 12, or the Ubuntu of NVIDIA's images).
# Exits 1, naming the library, when one cannot be attributed to a package.
#   runtime_packages.sh BINARY
set -euo pipefail
bin=${1:?usage: runtime_packages.sh BINARY}
# Where the dynamic loader finds each library (soname => path).
declare -A path_of
# ldd prints "soname => path (address)", or "path (address)" for the loader itself.
while read -r first arrow path _; do
  if [[ "$arrow" == "=>" && "${path:-}" == /* ]]; then
    path_of[$first]=$path
  elif [[ "$first" == /* ]]; then
    path_of[${first##*/}]=$first
  fi
done < <(ldd "$bin" | sed -n 's/^\t//p')
needed=$(readelf -d "$bin" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
[[ -n "$needed" ]] || { echo "runtime_packages.sh: $bin has no NEEDED entries" >&2; exit 1; }
packages=()
for soname in $needed; do
  path=${path_of[$soname]:-}
  if [[ -z "$path" ]]; then
    echo "runtime_packages.sh: $soname: not found by the dynamic loader" >&2
    exit 1
  fi
  # With merged /usr a library found in /lib may be registered under /usr/lib, or the other way.
  alt=${path#/usr}
  [[ "$alt" != "$path" ]] || alt=/usr$path
  owner=$(dpkg -S "$path" 2>/dev/null || dpkg -S "$alt" 2>/dev/null || true)
  if [[ -z "$owner" ]]; then
    echo "runtime_packages.sh: $soname ($path) belongs to no package" >&2
    exit 1
  fi
  packages+=("${owner%%:*}")
done
printf '%s\n' "${packages[@]}" | sort -u
