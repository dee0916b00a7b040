#!/usr/bin/env bash
# Builds librdkafka and its test suite from the source that ships inside the `rdkafka-sys`
# crate on crates.io (pinned by version and checksum). Nothing fetched is committed: it lives
# under target/librdkafka-tests/ (override with RDK_DIR).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
version="4.10.0+2.12.1" # rdkafka-sys version; librdkafka 2.12.1
sha256="e234cf318915c1059d4921ef7f75616b5219b10b46e9f3a511a15eb4b56a3f77"
dir="${RDK_DIR:-$root/target/librdkafka-tests}"
src="$dir/rdkafka-sys-$version/librdkafka"

if [ -x "$src/tests/test-runner" ]; then
  echo "librdkafka test-runner already built in $src/tests"
  exit 0
fi
if [ "${CI:-}" = "true" ] || ! dpkg -s libzstd-dev liblz4-dev zlib1g-dev >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    build-essential libzstd-dev liblz4-dev zlib1g-dev python3 >/dev/null
fi
mkdir -p "$dir"
crate="$dir/rdkafka-sys-$version.crate"
if [ ! -f "$crate" ]; then
  curl -fsSL --retry 3 -o "$crate.part" \
    "https://static.crates.io/crates/rdkafka-sys/rdkafka-sys-$version.crate"
  mv "$crate.part" "$crate"
fi
echo "$sha256  $crate" | sha256sum -c -
rm -rf "$dir/rdkafka-sys-$version"
tar xzf "$crate" -C "$dir"
cd "$src"
./configure --disable-ssl --disable-gssapi --disable-curl >/dev/null
make -j"$(nproc)" libs >/dev/null
make -C tests build -j"$(nproc)" >/dev/null
echo "built $src/tests/test-runner"
