-- join.lua: give an identity a place in the room, or return the place it already holds.
-- KEYS:  1 meta (HASH), 2 q (ZSET identity -> seq), 3 active (ZSET identity -> expiry ms),
--        4 sess (HASH identity -> session expiry ms), 5 seq (INCR counter),
--        6 buying (SET of admitted identities holding a reservation),
--        7 pre (SET: the pre-queue of a scheduled drop)
-- ARGV:  1 key prefix "rg:{room}:", 2 identity, 3 now ms, 4 liveness interval ms, 5 idle ms,
--        6 admit per minute, 7 max active, 8 bucket burst,
--        9 admission cap of a room with a sale (-1: no sale),
--        10 opening time ms of a room with a pre-queue (-1: none), 11 instant admission (1 / 0)
-- Returns {status, seq, created}: status 'waiting' | 'admitted' | 'prequeue' | 'closed'; seq 0
-- when unknown (an identity admitted earlier, or in the pre-queue); created 1 when this call made
-- the place. A draining room answers existing places but makes no new ones ('closed').
-- Pre-queue: before the opening a new arrival joins the pre-queue (no seq). The first join at or
-- after the opening freezes it (rg_freeze_pre), and arrivals from then on queue FIFO behind it.
-- With instant admission, when nobody waits (nor any pre-queue member still without a seq), the
-- room is open, a slot is free and the bucket has a token, the new arrival is admitted at once
-- (no visible queue without a crowd); its claim window is the idle timeout.
local meta, q, active, sess, seqkey, buying = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local pre = KEYS[7]
local prefix, id = ARGV[1], ARGV[2]
local now, interval, idle = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local per_min, max_active, burst = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local cap, opens, instant = tonumber(ARGV[9]), tonumber(ARGV[10]), ARGV[11] == '1'
per_min, max_active, burst = rg_settings(meta, per_min, max_active, burst)
local cur = math.floor(now / interval)

local state = redis.call('HGET', meta, 'state') or 'open'
if state == 'closed' then
  return {'closed', 0, 0}
end
local s = redis.call('ZSCORE', q, id)
if s then
  rg_mark_alive(prefix, tonumber(s), cur, interval, idle)
  return {'waiting', tonumber(s), 0}
end
rg_expire_sessions(active, sess, buying, now)
if redis.call('ZSCORE', active, id) then
  return {'admitted', 0, 0}
end
local pending = false
if opens >= 0 then
  local frozen = rg_pre(meta)
  pending = rg_pre_pending(meta)
  if (pending or not frozen) and redis.call('SISMEMBER', pre, id) == 1 then
    return {'prequeue', 0, 0}
  end
  if not frozen then
    if now < opens then
      if state == 'draining' then
        return {'closed', 0, 0}
      end
      redis.call('SADD', pre, id)
      return {'prequeue', 0, 1}
    end
    rg_freeze_pre(meta, pre, seqkey)
    pending = rg_pre_pending(meta)
  end
end
if state == 'draining' then
  return {'closed', 0, 0}
end
local seq = redis.call('INCR', seqkey)
if instant and not pending and state == 'open' and redis.call('ZCARD', q) == 0
    and rg_free_slots(active, buying, max_active, cap) > 0 then
  local tokens, ts = rg_refill(meta, now, per_min, burst)
  if tokens >= 1 then
    rg_save_tokens(meta, tokens - 1, ts)
    redis.call('ZADD', active, now + idle, id)
    redis.call('HSET', meta, 'served', seq)
    redis.call('HINCRBY', meta, 'admitted', 1)
    return {'admitted', seq, 1}
  end
end
redis.call('ZADD', q, seq, id)
rg_mark_alive(prefix, seq, cur, interval, idle)
return {'waiting', seq, 1}
