#!/usr/bin/env bash
# Container health probe: GET /livez on the admin listener over bash's /dev/tcp (the slim
# runtime image has no curl). Exit 0 on HTTP 200, 1 otherwise. The port comes from
# RUSHGATE_HEALTH_PORT (default 9090, the port deploy/rushgate.toml's admin_listen uses).
set -u
port="${RUSHGATE_HEALTH_PORT:-9090}"
{ exec 3<>"/dev/tcp/127.0.0.1/${port}"; } 2>/dev/null || exit 1
printf 'GET /livez HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
IFS= read -r -t 5 status <&3 || exit 1
case "$status" in
  "HTTP/1.1 200"* | "HTTP/1.0 200"*) exit 0 ;;
  *) exit 1 ;;
esac
