#!/bin/sh
# Demo publisher for docker compose: publishes a small JSON event to one channel every
# INTERVAL seconds, straight into Redis through Herald's function library, the same
# atomic step the gateways use (README: "Publishing from any language, straight to
# Redis"). Runs in the stock redis image, which has redis-cli and a POSIX shell.
#
# Environment (defaults in brackets):
#   REDIS_HOST [redis]  REDIS_PORT [6379]  HERALD_PREFIX [herald]  CHANNEL [demo]
#   REDIS_USER [none: the default user]  REDISCLI_AUTH [none]: its password
#   INTERVAL [1]  COUNT [0 = forever]
#   HISTORY_SIZE [100]  HISTORY_TTL [300]: keep these equal to the channel's namespace
#   in herald.toml ([namespaces.default]: history_size = 100, history_ttl = "5m").
set -eu

host=${REDIS_HOST:-redis}
port=${REDIS_PORT:-6379}
prefix=${HERALD_PREFIX:-herald}
channel=${CHANNEL:-demo}
interval=${INTERVAL:-1}
count=${COUNT:-0}
history_size=${HISTORY_SIZE:-100}
history_ttl=${HISTORY_TTL:-300}
meta_ttl=2592000 # 30 days: how long the channel's epoch and top offset outlive it
idem_ttl=300

# All keys of a channel share the {channel} hash tag, so they live in one slot.
stream="$prefix:{$channel}:stream"
meta="$prefix:{$channel}:meta"
pubsub="$prefix:{$channel}:pub"

n=0
while [ "$count" -eq 0 ] || [ "$n" -lt "$count" ]; do
    n=$((n + 1))
    # A fresh epoch for every call: Redis uses it only if the channel has none yet.
    epoch=$(od -An -N4 -tx1 /dev/urandom | tr -d ' \n')
    data=$(printf '{"n":%d,"at":"%s"}' "$n" "$(date -u +%Y-%m-%dT%H:%M:%SZ)")
    # Arguments: pub/sub channel, data, history size, history TTL, meta TTL, new epoch,
    # publisher info, tags, idempotency TTL, 1 = Redis Cluster (SPUBLISH) else 0.
    if reply=$(redis-cli -e -h "$host" -p "$port" ${REDIS_USER:+--user "$REDIS_USER"} FCALL herald_publish 2 "$stream" "$meta" \
        "$pubsub" "$data" "$history_size" "$history_ttl" "$meta_ttl" "$epoch" '' '' \
        "$idem_ttl" 0); then
        # shellcheck disable=SC2086 # split the reply into offset, epoch, duplicate
        set -- $reply
        echo "published to $channel: offset $1, epoch $2"
    else
        echo "publish to $channel failed: $reply" >&2
    fi
    if [ "$count" -eq 0 ] || [ "$n" -lt "$count" ]; then
        sleep "$interval"
    fi
done
