#!lua name=herald
--[[
Herald's Redis function library. Gateways load it at start (FUNCTION LOAD REPLACE) and
check herald_version; any publisher, in any language, can call it directly.

Keys of one channel share a hash tag, so they live in one slot (Redis Cluster):
  <prefix>:{<channel>}:stream   STREAM, entry id "<offset>-0", fields d (data JSON),
                                i (publisher info JSON or ""), t (tags JSON or "")
  <prefix>:{<channel>}:meta     HASH: epoch, top
  <prefix>:{<channel>}:idem:<k> HASH: offset, epoch (idempotent publish results)
  <prefix>:{<channel>}:presence HASH: client id -> ClientInfo JSON
  <prefix>:{<channel>}:presence-exp ZSET: client id -> expiry (Redis time, ms)

Keys of one user (one key each, so any slot serves it):
  <prefix>:user:{<user>}:publishes  STRING: the publish bucket's full-again time (µs)
  <prefix>:user:{<user>}:conns      ZSET: client id -> admission expiry (Redis time, ms)
]]

-- Redis's own clock, so that the clocks of the nodes never matter.
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local VERSION = '5'

--[[
FCALL herald_publish <numkeys 2|3> <stream> <meta> [<idem key>]
      <pubsub channel> <data> <history size> <history ttl s> <meta ttl s> <new epoch>
      <info json|""> <tags json|""> <idempotency ttl s> <sharded 0|1>
      [<version, 0 = none> <version epoch>]
Returns {offset, epoch, outcome}: outcome 0 published, 1 a duplicate (the idempotency
key's first result), 2 suppressed (the version was not newer than the channel's newest
in the same version epoch; the reply holds the channel's current position). With
history size 0 nothing is stored and the offset is 0. The publication goes out on
pub/sub as a MessagePack array [offset, epoch, data, info, tags] in the same atomic step
that assigns its offset, so pub/sub order is offset order and no subscriber sees an
offset history lacks. The newest version is kept in the meta hash (ver, vep).
]]
local function publish(keys, args)
  local stream, meta, idem = keys[1], keys[2], keys[3]
  if idem then
    local prev = redis.call('HMGET', idem, 'offset', 'epoch')
    if prev[1] then
      return {tonumber(prev[1]), prev[2], 1}
    end
  end
  local channel, data = args[1], args[2]
  local size, history_ttl, meta_ttl = tonumber(args[3]), args[4], args[5]
  local info, tags = args[7], args[8]
  local version, vepoch = tonumber(args[11] or '0') or 0, args[12] or ''
  if version > 0 then
    local newest = redis.call('HMGET', meta, 'ver', 'vep')
    if newest[1] and (newest[2] or '') == vepoch and tonumber(newest[1]) >= version then
      local now = redis.call('HMGET', meta, 'top', 'epoch')
      if size > 0 then
        return {tonumber(now[1] or '0'), now[2] or '', 2}
      end
      return {0, '', 2}
    end
    redis.call('HSET', meta, 'ver', version, 'vep', vepoch)
    redis.call('EXPIRE', meta, meta_ttl)
  end
  local offset, epoch = 0, ''
  if size > 0 then
    epoch = redis.call('HGET', meta, 'epoch')
    if not epoch then
      -- No meta: a new stream, or history was lost. A fresh epoch makes that visible.
      epoch = args[6]
      redis.call('HSET', meta, 'epoch', epoch)
    end
    offset = redis.call('HINCRBY', meta, 'top', 1)
    if offset == 1 then
      redis.call('DEL', stream)
    end
    redis.call('XADD', stream, 'MAXLEN', size, offset .. '-0', 'd', data, 'i', info, 't', tags)
    redis.call('EXPIRE', stream, history_ttl)
    redis.call('EXPIRE', meta, meta_ttl)
  end
  local envelope = cmsgpack.pack({offset, epoch, data, info, tags})
  if args[10] == '1' then
    redis.call('SPUBLISH', channel, envelope)
  else
    redis.call('PUBLISH', channel, envelope)
  end
  if idem then
    redis.call('HSET', idem, 'offset', offset, 'epoch', epoch)
    redis.call('EXPIRE', idem, args[9])
  end
  return {offset, epoch, 0}
end

--[[
FCALL herald_history 2 <stream> <meta> <since offset> <limit, -1 = all> <reverse 0|1>
      <new epoch> <meta ttl s>
Returns {top, epoch, entries} read atomically; entries as XRANGE/XREVRANGE returns them.
Creates the epoch if the channel has none, so a client that subscribes before the first
publication can recover it. Forward reads return offsets > since; reverse reads return
offsets < since. A since of -1 means none: from the oldest, or (reverse) the newest.
]]
local function history(keys, args)
  local stream, meta = keys[1], keys[2]
  local since, limit, reverse = tonumber(args[1]), tonumber(args[2]), args[3] == '1'
  local state = redis.call('HMGET', meta, 'epoch', 'top')
  local epoch, top = state[1], tonumber(state[2] or '0')
  if not epoch then
    epoch = args[4]
    redis.call('HSET', meta, 'epoch', epoch)
    redis.call('EXPIRE', meta, args[5])
  end
  local entries = {}
  if limit ~= 0 then
    if reverse and since == 0 then
      -- Nothing is older than offset 0.
      entries = {}
    elseif reverse then
      local upper = '+'
      if since > 0 then
        upper = '(' .. since .. '-0'
      end
      if limit > 0 then
        entries = redis.call('XREVRANGE', stream, upper, '-', 'COUNT', limit)
      else
        entries = redis.call('XREVRANGE', stream, upper, '-')
      end
    else
      local lower = '(' .. since .. '-0'
      if since <= 0 then
        lower = '-'
      end
      if limit > 0 then
        entries = redis.call('XRANGE', stream, lower, '+', 'COUNT', limit)
      else
        entries = redis.call('XRANGE', stream, lower, '+')
      end
    end
  end
  return {top, epoch, entries}
end

--[[
FCALL herald_presence_add 2 <presence> <presence-exp> <client> <info json> <ttl ms>
Adds or refreshes one subscriber; nodes refresh theirs well within the TTL.
]]
local function presence_add(keys, args)
  local ttl = tonumber(args[3])
  redis.call('HSET', keys[1], args[1], args[2])
  redis.call('ZADD', keys[2], now_ms() + ttl, args[1])
  local key_ttl = math.ceil(ttl / 1000) + 60
  redis.call('EXPIRE', keys[1], key_ttl)
  redis.call('EXPIRE', keys[2], key_ttl)
  return 1
end

-- FCALL herald_presence_remove 2 <presence> <presence-exp> <client>
local function presence_remove(keys, args)
  redis.call('HDEL', keys[1], args[1])
  redis.call('ZREM', keys[2], args[1])
  return 1
end

--[[
FCALL herald_presence 2 <presence> <presence-exp>
Drops expired entries (subscribers of nodes that died), then returns the rest as
HGETALL does: client, info, client, info, ...
]]
local function presence(keys, args)
  local expired = redis.call('ZRANGEBYSCORE', keys[2], '-inf', now_ms())
  for _, client in ipairs(expired) do
    redis.call('HDEL', keys[1], client)
  end
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', keys[2], '-inf', now_ms())
  end
  return redis.call('HGETALL', keys[1])
end

--[[
FCALL herald_rate 1 <bucket> <interval µs> <burst>
Takes one token from a bucket (GCRA, as herald_broker::Bucket): the key holds the time
the bucket is full again and expires then, so an idle user's bucket costs nothing.
Returns 1 when a token was taken, 0 when the bucket is empty.
]]
local function rate(keys, args)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local interval, burst = tonumber(args[1]), tonumber(args[2])
  local tat = tonumber(redis.call('GET', keys[1]) or now) or now
  if tat < now then
    tat = now
  end
  local next = tat + interval
  if next - now > interval * burst then
    return 0
  end
  -- %.0f: Lua would print a time in µs as 1.7e+15 and lose its digits.
  redis.call('SET', keys[1], string.format('%.0f', next), 'PX', math.ceil((next - now) / 1000))
  return 1
end

--[[
FCALL herald_conn_admit 1 <conns> <client> <limit> <ttl ms>
Drops expired admissions (connections of nodes that died), then admits the client when
it is already admitted (a refresh) or the user has fewer than <limit>. Returns 1 or 0.
]]
local function conn_admit(keys, args)
  local now = now_ms()
  redis.call('ZREMRANGEBYSCORE', keys[1], '-inf', now)
  if not redis.call('ZSCORE', keys[1], args[1])
      and redis.call('ZCARD', keys[1]) >= tonumber(args[2]) then
    return 0
  end
  local ttl = tonumber(args[3])
  redis.call('ZADD', keys[1], now + ttl, args[1])
  -- Every admission has the same TTL: the newest outlives the rest.
  redis.call('PEXPIRE', keys[1], ttl)
  return 1
end

-- FCALL herald_conn_release 1 <conns> <client>
local function conn_release(keys, args)
  return redis.call('ZREM', keys[1], args[1])
end

local function version()
  return VERSION
end

redis.register_function('herald_publish', publish)
redis.register_function('herald_history', history)
redis.register_function('herald_presence_add', presence_add)
redis.register_function('herald_presence_remove', presence_remove)
redis.register_function('herald_presence', presence)
redis.register_function('herald_rate', rate)
redis.register_function('herald_conn_admit', conn_admit)
redis.register_function('herald_conn_release', conn_release)
redis.register_function{function_name = 'herald_version', callback = version, flags = {'no-writes'}}
