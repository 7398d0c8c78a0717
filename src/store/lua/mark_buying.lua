-- mark_buying.lua: an admitted shopper reserved stock; it stops counting against the room's
-- stock-aware admission cap (see rg_free_slots in room_prelude.lua).
-- KEYS:  1 active (ZSET identity -> expiry ms), 2 buying (SET)
-- ARGV:  1 identity
-- Returns 1 when recorded (or already recorded), 0 when the identity holds no admission.
local active, buying = KEYS[1], KEYS[2]
if not redis.call('ZSCORE', active, ARGV[1]) then
  return 0
end
redis.call('SADD', buying, ARGV[1])
return 1
