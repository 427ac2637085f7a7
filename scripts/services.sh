#!/usr/bin/env bash
# Start the services the tests and the production-like runs need, if they are not already up: Redis on 127.0.0.1:6379.
set -euo pipefail
port="${RR_REDIS_PORT:-6379}"
if command -v redis-cli >/dev/null 2>&1 && redis-cli -p "$port" ping >/dev/null 2>&1; then
  exit 0
fi
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "redis-server is missing: install it (Debian: sudo apt-get install redis-server)" >&2
    exit 1
  fi
fi
mkdir -p /tmp/rr-redis
redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no --dir /tmp/rr-redis \
  --logfile /tmp/rr-redis/redis.log
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && exit 0; sleep 0.1; done
echo "redis-server did not start; see /tmp/rr-redis/redis.log" >&2
exit 1
