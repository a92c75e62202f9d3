#!/usr/bin/env bash
# Checks the units as systemd would load them: `systemd-analyze verify`
# (syntax, directives, executables) and the `systemd-analyze security`
# exposure score, which must stay at or under 2.0 ("OK"). systemd does not
# run here: the units are loaded from a scratch root holding them, the
# host's own units (for the targets they name) and stand-ins at the
# ExecStart paths. Their behaviour is tested as processes in
# proxy/tests/service_manager.rs and controller/tests/service_manager.rs.
set -euo pipefail
cd "$(dirname "$0")"

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/bin" "$root/etc/systemd/system" "$root/usr/lib/systemd"
cp -r /usr/lib/systemd/system "$root/usr/lib/systemd/"
for bin in vigil-proxy vigil-controller; do
  printf '#!/bin/sh\n' >"$root/usr/bin/$bin"
  chmod 0755 "$root/usr/bin/$bin"
done
cp vigil-proxy.service vigil-controller.service "$root/etc/systemd/system/"

systemd-analyze verify --root="$root" \
  /etc/systemd/system/vigil-proxy.service /etc/systemd/system/vigil-controller.service
echo "systemd-analyze verify: ok"

status=0
for unit in vigil-proxy.service vigil-controller.service; do
  line=$(systemd-analyze security --offline=true --root="$root" "$unit" | tail -1)
  echo "$line"
  score=$(grep -oE '[0-9]+\.[0-9]+' <<<"$line" | head -1)
  if awk -v s="$score" 'BEGIN { exit !(s > 2.0) }'; then
    echo "error: $unit: exposure $score is over 2.0" >&2
    status=1
  fi
done
exit "$status"
