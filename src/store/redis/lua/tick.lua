-- tick.lua: expire sessions, admit waiters in sequence order at the paced rate, report state.
-- KEYS:  1 meta, 2 q, 3 active, 4 sess, 5 gone, 6 seq, 7 buying, 8 pre, 9 revoked
--        (rg:{id}:<name>; what each holds: src/store/keys.rs)
-- ARGV:  1 key prefix "rg:{room}:", 2 now ms, 3 liveness interval ms, 4 idle ms,
--        5 admit per minute, 6 max active, 7 bucket burst,
--        8 departures the caller already knows (-1: always send the bitmap),
--        9 most head entries examined per call (bounds the script's run time),
--        10 admission cap of a room with a sale (-1: no sale), 11 hold (1: admit nobody)
-- Returns {served, last_seq, waiting, active, admitted_total, evicted_total, left_total, state,
--          gone_base_byte, gone_bytes | nil, admit_per_minute, max_active, seed | nil,
--          pre_waiting, pre_frozen (1 / 0), pre_base, pre_count, pre_assigned, rev_total,
--          msg_v}
--          (msg_v: version of the room's live message, 0 when none was ever set; a node reads
--          the message itself only when the version moved)
--          (rev_total: revocation feed entries ever appended; expired ones, at most 100 per
--          tick, are trimmed from its head here)
--          (admit_per_minute and max_active are the settings in force: the node's, or live ones
--          set through the admin API; the rest describes a scheduled drop's pre-queue).
-- Nobody is admitted while a pre-queue opening is under way (rg_pre_pending).
-- A draining room (being retired) admits everyone waiting at once, without pacing or the
-- session cap (the stock cap of a sale still holds), and takes no new joins.
-- gone_bytes is GETRANGE gone [floor((served+1)/8), floor(last_seq/8)], sent only when the
-- departure count differs from ARGV[8] (new bits past the old range are all zero otherwise).
-- A head waiter not seen within the idle timeout is evicted (gone bit set) and skipped, so a
-- silent head never holds the queue. An admitted waiter must claim its pass before the idle
-- timeout runs out from when it was last seen, or its slot frees.
local meta, q, active, sess, gone, seqkey = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local buying, pre, revoked = KEYS[7], KEYS[8], KEYS[9]
local prefix = ARGV[1]
local now, interval, idle = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local per_min, max_active, burst = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local known, max_checks, cap = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[10])
local hold = ARGV[11] == '1'
per_min, max_active, burst = rg_settings(meta, per_min, max_active, burst)
local cur = math.floor(now / interval)
local span = math.ceil(idle / interval)

rg_expire_sessions(active, sess, buying, now)
local state = redis.call('HGET', meta, 'state') or 'open'
if (state == 'open' or state == 'draining') and not hold and not rg_pre_pending(meta) then
  local tokens, ts = rg_refill(meta, now, per_min, burst)
  local budget, slots = math.floor(tokens), max_active
  if state == 'draining' then
    budget, slots = max_checks, math.huge
  end
  local want = math.min(budget, rg_free_slots(meta, active, buying, slots, cap, now))
  local checks, admitted, evicted, served = max_checks, 0, 0, false
  while want > 0 and checks > 0 do
    -- Read the head in chunks: with a slow rate `want` is 1, and idle heads before the next
    -- live one would otherwise cost one ZRANGE each.
    local head = redis.call('ZRANGE', q, 0, math.min(math.max(want, 100), checks) - 1, 'WITHSCORES')
    if #head == 0 then
      break
    end
    for i = 1, #head, 2 do
      local member, seq = head[i], tonumber(head[i + 1])
      redis.call('ZREM', q, member)
      served = seq
      checks = checks - 1
      local k = rg_last_seen(prefix, seq, cur, span)
      if k then
        redis.call('ZADD', active, math.max((k + 1) * interval + idle, now + interval), member)
        admitted = admitted + 1
        want = want - 1
        if want == 0 then
          break
        end
      else
        redis.call('SETBIT', gone, seq, 1)
        evicted = evicted + 1
      end
    end
  end
  -- A bucket below zero (outage admissions recorded by reconcile.lua) keeps its debt.
  rg_save_tokens(meta, math.max(tokens - admitted, math.min(tokens, 0)), ts)
  if served then
    redis.call('HSET', meta, 'served', served)
    redis.call('HINCRBY', meta, 'admitted', admitted)
    redis.call('HINCRBY', meta, 'evicted', evicted)
  end
end

local trims = 0
while trims < 100 do
  local first = redis.call('LINDEX', revoked, 0)
  if not first or (tonumber(string.match(first, '(%d+)$')) or 0) > now then
    break
  end
  redis.call('LPOP', revoked)
  trims = trims + 1
end
if trims > 0 then
  redis.call('HINCRBY', meta, 'rev_trimmed', trims)
end

local m = redis.call('HMGET', meta, 'served', 'admitted', 'evicted', 'left', 'state', 'rev_total',
                    'msg_v')
local served = tonumber(m[1]) or 0
local evicted_total, left_total = tonumber(m[3]) or 0, tonumber(m[4]) or 0
local last = tonumber(redis.call('GET', seqkey)) or 0
local base = math.floor((served + 1) / 8)
local bytes = false
if evicted_total + left_total ~= known then
  if last > served then
    bytes = redis.call('GETRANGE', gone, base, math.floor(last / 8))
  else
    bytes = ''
  end
end
local frozen, pre_base, pre_count, pre_assigned = rg_pre(meta)
local pre_waiting = pre_count - pre_assigned
if not frozen then
  pre_waiting = redis.call('SCARD', pre)
end
return {served, last, redis.call('ZCARD', q), redis.call('ZCARD', active),
        tonumber(m[2]) or 0, evicted_total, left_total, m[5] or 'open', base, bytes,
        per_min, max_active, redis.call('HGET', meta, 'seed'), pre_waiting,
        frozen and 1 or 0, pre_base, pre_count, pre_assigned, tonumber(m[6]) or 0,
        tonumber(m[7]) or 0}
