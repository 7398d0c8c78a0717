-- mark_buying.lua: admitted shoppers reserved stock; they stop counting against the room's
-- stock-aware admission cap (see rg_free_slots in room_prelude.lua). Nodes batch these per
-- refresh, so one call usually carries every buyer of the last refresh.
-- KEYS:  1 active, 2 buying (rg:{id}:<name>; what each holds: src/store/keys.rs)
-- ARGV:  identities
-- Returns how many of them hold an admission (recorded, or already recorded); the others are
-- ignored.
local active, buying = KEYS[1], KEYS[2]
local n = 0
for i = 1, #ARGV do
  if redis.call('ZSCORE', active, ARGV[i]) then
    redis.call('SADD', buying, ARGV[i])
    n = n + 1
  end
end
return n
