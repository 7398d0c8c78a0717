-- leave.lua: give a place up (waiting) or end an admitted session early; as its holder or as the
-- operator.
-- KEYS:  1 meta, 2 q, 3 active, 4 sess, 5 gone, 6 buying, 7 pre, 8 pre_left, 9 holder, 10 revoked
--        (rg:{id}:<name>; what each holds: src/store/keys.rs)
-- ARGV:  1 identity, 2 the asking ticket's holder generation ('' : the operator), 3 until ms (how
--        long nodes keep the revocation)
-- Returns 'moved' (the ticket is of an older generation than the place's: nothing changed),
--         'waiting' (place given up; its gone bit set so positions behind it fall; a pre-queue
--         member leaves the pre-queue, or, once it is frozen, is recorded in pre_left and gets
--         its gone bit when the opening reaches it),
--         'admitted' (session ended, slot freed) or 'absent' (nothing held).
-- Ending a session, and every operator end, raises the identity's holder generation and appends
-- `identity gen ended until` to the revocation feed: nodes refuse the session's passes from
-- their next refresh on.
local meta, q, active, sess, gone, buying = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local pre, pre_left, holder, revoked = KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local id, held, keep = ARGV[1], ARGV[2], ARGV[3]
local gen = tonumber(redis.call('HGET', holder, id)) or 0
if held ~= '' and tonumber(held) < gen then
  return 'moved'
end

local function give_up()
  local s = redis.call('ZSCORE', q, id)
  if s then
    redis.call('ZREM', q, id)
    redis.call('SETBIT', gone, tonumber(s), 1)
    redis.call('HINCRBY', meta, 'left', 1)
    return 'waiting'
  end
  if redis.call('ZREM', active, id) == 1 then
    redis.call('HDEL', sess, id)
    redis.call('SREM', buying, id)
    redis.call('HINCRBY', meta, 'left', 1)
    return 'admitted'
  end
  local v = redis.call('HMGET', meta, 'pre_frozen', 'pre_count', 'pre_assigned')
  if not v[1] then
    if redis.call('SREM', pre, id) == 1 then
      redis.call('HINCRBY', meta, 'left', 1)
      return 'waiting'
    end
  elseif tonumber(v[3]) < tonumber(v[2]) and redis.call('SISMEMBER', pre, id) == 1 then
    redis.call('SADD', pre_left, id)
    return 'waiting'
  end
  return 'absent'
end

local outcome = give_up()
if outcome == 'admitted' or held == '' then
  redis.call('HSET', holder, id, gen + 1)
  redis.call('RPUSH', revoked, id .. ' ' .. (gen + 1) .. ' ended ' .. keep)
  redis.call('HINCRBY', meta, 'rev_total', 1)
end
return outcome
