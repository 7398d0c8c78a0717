-- open_prequeue.lua: give the next batch of a frozen pre-queue, in shuffled order, its seqs.
-- KEYS:  1 meta, 2 q, 3 pre, 4 pre_left, 5 gone (rg:{id}:<name>; what each holds:
--        src/store/keys.rs)
-- ARGV:  1 key prefix "rg:{room}:", 2 now ms, 3 liveness interval ms, 4 idle ms,
--        5 start (how many members of the shuffled order the caller believes are done),
--        6.. the members at positions start, start+1, ... of the shuffled order
-- Returns how many members have their seq after this call. Idempotent when several nodes race at
-- the opening: the batch applies only when start equals pre_assigned (otherwise nothing changes
-- and the current count tells the caller where to go on). Member at position i gets seq
-- pre_base + i + 1, is queued and marked seen now; one that left meanwhile gets its gone bit.
-- Once every member has its seq, pre is kept 7 days as the record the shuffle is verified
-- against. Errors (nothing changes): not frozen, a batch past the end, an id not in pre.
local meta, q, pre, pre_left, gone = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local prefix = ARGV[1]
local now, interval, idle = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local start = tonumber(ARGV[5])
local frozen, base, count, assigned = rg_pre(meta)
if not frozen then
  return redis.error_reply('pre-queue is not frozen')
end
if start ~= assigned then
  return assigned
end
local n = #ARGV - 5
if start + n > count then
  return redis.error_reply('batch runs past the pre-queue')
end
for i = 1, n do
  if redis.call('SISMEMBER', pre, ARGV[5 + i]) == 0 then
    return redis.error_reply('not in the pre-queue: ' .. ARGV[5 + i])
  end
end
local cur = math.floor(now / interval)
local left = 0
for i = 1, n do
  local id, seq = ARGV[5 + i], base + start + i
  if redis.call('SISMEMBER', pre_left, id) == 1 then
    redis.call('SETBIT', gone, seq, 1)
    left = left + 1
  else
    redis.call('ZADD', q, seq, id)
    rg_mark_alive(prefix, seq, cur, interval, idle)
  end
end
if left > 0 then
  redis.call('HINCRBY', meta, 'left', left)
end
assigned = start + n
redis.call('HSET', meta, 'pre_assigned', assigned)
if assigned >= count then
  redis.call('DEL', pre_left)
  redis.call('PEXPIREAT', pre, now + 7 * 24 * 3600 * 1000)
end
return assigned
