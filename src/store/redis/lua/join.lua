-- join.lua: give an identity a place in the room, or return the place it already holds.
-- KEYS:  1 meta, 2 q, 3 active, 4 sess, 5 seq, 6 buying, 7 pre, 8 holder (rg:{id}:<name>; what
--        each holds: src/store/keys.rs)
-- ARGV:  1 key prefix "rg:{room}:", 2 now ms, 3 liveness interval ms, 4 idle ms,
--        5 admit per minute, 6 max active, 7 bucket burst,
--        8 admission cap of a room with a sale (-1: no sale),
--        9 opening time ms of a room with a pre-queue (-1: none), 10 instant admission (1 / 0),
--        11.. two per join, in arrival order: identity, minted ('1' when the caller has just
--        made it at random, so it cannot hold a place and is not looked up; '0' otherwise).
--        A batch: the Redis store coalesces the joins that arrive while earlier ones are in
--        flight.
-- Joins the identities one after the other, exactly as that many single joins at `now` would,
-- and returns {status, seq, created, gen} for each, flattened in the same order (gen: the
-- identity's holder generation, 0 for a minted identity).
-- status 'waiting' | 'admitted' | 'prequeue' | 'closed'; seq 0
-- when unknown (an identity admitted earlier, or in the pre-queue); created 1 when this call made
-- the place. A draining room answers existing places but makes no new ones ('closed').
-- Pre-queue: before the opening a new arrival joins the pre-queue (no seq). The first join at or
-- after the opening freezes it (rg_freeze_pre), and arrivals from then on queue FIFO behind it.
-- With instant admission, when nobody waits (nor any pre-queue member still without a seq), the
-- room is open, a slot is free and the bucket has a token, the new arrival is admitted at once
-- (no visible queue without a crowd); its claim window is the idle timeout.
local meta, q, active, sess, seqkey, buying = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local pre, holder = KEYS[7], KEYS[8]
local prefix = ARGV[1]
local now, interval, idle = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local per_min, max_active, burst = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local cap, opens, instant = tonumber(ARGV[8]), tonumber(ARGV[9]), ARGV[10] == '1'
per_min, max_active, burst = rg_settings(meta, per_min, max_active, burst)
local cur = math.floor(now / interval)
local state = redis.call('HGET', meta, 'state') or 'open'

-- The batch runs at one `now`, so work can be shared between its joins: sessions expired by
-- `now` stay expired; new places, the liveness bits and the seq counter are kept here and
-- written once at the end (a join later in the batch consults them first), and a queue that
-- holds someone stays non-empty (joins never remove anyone).
local expired, queued = false, false
local placed, zadd, seen = {}, {}, {}
local next_seq = nil

local function take_seq()
  if not next_seq then
    next_seq = tonumber(redis.call('GET', seqkey)) or 0
  end
  next_seq = next_seq + 1
  return next_seq
end

-- Before anything else reads or moves the counter (freezing a pre-queue does).
local function write_seq()
  if next_seq then
    redis.call('SET', seqkey, next_seq)
    next_seq = nil
  end
end

local function join(id, minted)
  if state == 'closed' then
    return 'closed', 0, 0
  end
  if not minted then
    local s = placed[id] or redis.call('ZSCORE', q, id)
    if s then
      seen[#seen + 1] = s
      return 'waiting', tonumber(s), 0
    end
  end
  if not expired then
    rg_expire_sessions(active, sess, buying, now)
    expired = true
  end
  if not minted and redis.call('ZSCORE', active, id) then
    return 'admitted', 0, 0
  end
  local pending = false
  if opens >= 0 then
    local frozen = rg_pre(meta)
    pending = rg_pre_pending(meta)
    if not minted and (pending or not frozen) and redis.call('SISMEMBER', pre, id) == 1 then
      return 'prequeue', 0, 0
    end
    if not frozen then
      if now < opens then
        if state == 'draining' then
          return 'closed', 0, 0
        end
        redis.call('SADD', pre, id)
        return 'prequeue', 0, 1
      end
      write_seq()
      rg_freeze_pre(meta, pre, seqkey)
      pending = rg_pre_pending(meta)
    end
  end
  if state == 'draining' then
    return 'closed', 0, 0
  end
  local seq = take_seq()
  if instant and not pending and state == 'open' and not queued then
    queued = redis.call('ZCARD', q) > 0
    if not queued and rg_free_slots(meta, active, buying, max_active, cap, now) > 0 then
      local tokens, ts = rg_refill(meta, now, per_min, burst)
      if tokens >= 1 then
        rg_save_tokens(meta, tokens - 1, ts)
        redis.call('ZADD', active, now + idle, id)
        redis.call('HSET', meta, 'served', seq)
        redis.call('HINCRBY', meta, 'admitted', 1)
        return 'admitted', seq, 1
      end
    end
  end
  placed[id] = seq
  zadd[#zadd + 1] = seq
  zadd[#zadd + 1] = id
  seen[#seen + 1] = seq
  queued = true
  return 'waiting', seq, 1
end

local out = {}
for i = 11, #ARGV, 2 do
  local minted = ARGV[i + 1] == '1'
  local status, seq, created = join(ARGV[i], minted)
  out[#out + 1] = status
  out[#out + 1] = seq
  out[#out + 1] = created
  out[#out + 1] = (not minted and tonumber(redis.call('HGET', holder, ARGV[i]))) or 0
end
write_seq()
if #zadd > 0 then
  redis.call('ZADD', q, unpack(zadd))
end
if #seen > 0 then
  local bits, ops = prefix .. 'alive:' .. cur, {}
  for _, seq in ipairs(seen) do
    ops[#ops + 1] = 'SET'
    ops[#ops + 1] = 'u1'
    ops[#ops + 1] = seq
    ops[#ops + 1] = 1
  end
  redis.call('BITFIELD', bits, unpack(ops))
  redis.call('PEXPIREAT', bits, (cur + 2) * interval + idle)
end
return out
