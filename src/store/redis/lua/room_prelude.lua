-- room_prelude.lua: helpers shared by the room scripts (join.lua, tick.lua). It is prepended to
-- each of them at build time, so every script stays one self-contained EVALSHA.
--
-- Derived keys (liveness bitmaps `<prefix>alive:<interval>`) carry the room's hash tag through
-- `prefix` ("rg:{room}:"), so a script only ever touches one cluster slot.
-- Time is always an argument (ms since the epoch): the embedded store runs the same logic under
-- test-controlled time.

-- Drops admitted sessions whose expiry (ZSET score, ms) has passed, with their claim and
-- buying records.
local function rg_expire_sessions(active, sess, buying, now)
  local expired = redis.call('ZRANGEBYSCORE', active, '-inf', now)
  if #expired > 0 then
    redis.call('ZREMRANGEBYSCORE', active, '-inf', now)
    for i = 1, #expired, 500 do
      local last = math.min(i + 499, #expired)
      redis.call('HDEL', sess, unpack(expired, i, last))
      redis.call('SREM', buying, unpack(expired, i, last))
    end
  end
end

-- Admissions the room can take now: free session slots, and in a room with a sale (cap >= 0)
-- no more admitted-but-not-buying sessions than the cap; slots leased to nodes for an outage
-- (lease.lua: meta.leased, until meta.leased_until) are not free.
local function rg_free_slots(meta, active, buying, max_active, cap, now)
  local n = redis.call('ZCARD', active)
  local l = redis.call('HMGET', meta, 'leased', 'leased_until')
  if l[1] and (tonumber(l[2]) or 0) > now then
    n = n + tonumber(l[1])
  end
  local free = max_active - n
  if cap >= 0 then
    free = math.min(free, cap - (n - redis.call('SCARD', buying)))
  end
  return free
end

-- Token bucket shared by every node: refilled from the time of the last save, capped at `burst`.
-- A fresh room starts with a full bucket.
local function rg_refill(meta, now, per_min, burst)
  local v = redis.call('HMGET', meta, 'tokens', 'ts')
  local tokens = tonumber(v[1]) or burst
  local ts = tonumber(v[2]) or now
  if now > ts then
    tokens = math.min(burst, tokens + (now - ts) * per_min / 60000)
  end
  return tokens, math.max(ts, now)
end

local function rg_save_tokens(meta, tokens, ts)
  redis.call('HSET', meta, 'tokens', tostring(tokens), 'ts', ts)
end

-- Records that waiter `seq` was seen during interval `cur`. The bitmap lives until no check can
-- look at it any more.
local function rg_mark_alive(prefix, seq, cur, interval, idle)
  local key = prefix .. 'alive:' .. cur
  redis.call('SETBIT', key, seq, 1)
  redis.call('PEXPIREAT', key, (cur + 2) * interval + idle)
end

-- Newest interval in [cur - span, cur] in which `seq` was seen, or false when it was not: then
-- the waiter has been idle for longer than the idle timeout.
local function rg_last_seen(prefix, seq, cur, span)
  for k = cur, cur - span, -1 do
    if redis.call('GETBIT', prefix .. 'alive:' .. k, seq) == 1 then
      return k
    end
  end
  return false
end

-- Live settings set through the admin API (meta fields set_rate, set_max_active) override the
-- node's configured ones, so a change made through one node applies on every node's next tick.
local function rg_settings(meta, per_min, max_active, burst)
  local v = redis.call('HMGET', meta, 'set_rate', 'set_max_active')
  local r, m = tonumber(v[1]), tonumber(v[2])
  if r then
    per_min = r
    burst = math.max(math.floor(r / 60), 1)
  end
  if m then
    max_active = m
  end
  return per_min, max_active, burst
end

-- Scheduled drops. Freezes the pre-queue once: no new arrivals join it, and seqs
-- base+1 .. base+count are reserved for its members (given out in shuffled order by
-- open_prequeue.lua), so every later arrival queues behind them.
local function rg_freeze_pre(meta, pre, seqkey)
  if redis.call('HGET', meta, 'pre_frozen') then
    return
  end
  local n = redis.call('SCARD', pre)
  local base = tonumber(redis.call('GET', seqkey)) or 0
  if n > 0 then
    redis.call('INCRBY', seqkey, n)
  end
  redis.call('HSET', meta, 'pre_frozen', 1, 'pre_base', base, 'pre_count', n, 'pre_assigned', 0)
end

-- {frozen, base, count, assigned} of the pre-queue (frozen false: still taking arrivals).
local function rg_pre(meta)
  local v = redis.call('HMGET', meta, 'pre_frozen', 'pre_base', 'pre_count', 'pre_assigned')
  return v[1] ~= false, tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4]) or 0
end

-- The opening is under way: reserved seqs are not all in the queue yet, so nobody may be
-- admitted (a later arrival would pass a pre-queue member) and no instant admission happens.
local function rg_pre_pending(meta)
  local frozen, _, count, assigned = rg_pre(meta)
  return frozen and assigned < count
end
