-- leave.lua: give a place up (waiting) or end an admitted session early.
-- KEYS:  1 meta, 2 q, 3 active, 4 sess, 5 gone, 6 buying, 7 pre, 8 pre_left (rg:{id}:<name>; what
--        each holds: src/store/keys.rs)
-- ARGV:  1 identity
-- Returns 'waiting' (place given up; its gone bit set so positions behind it fall; a pre-queue
--         member leaves the pre-queue, or, once it is frozen, is recorded in pre_left and gets
--         its gone bit when the opening reaches it),
--         'admitted' (session ended, slot freed) or 'absent' (nothing held).
local meta, q, active, sess, gone, buying = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local pre, pre_left = KEYS[7], KEYS[8]
local id = ARGV[1]
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
