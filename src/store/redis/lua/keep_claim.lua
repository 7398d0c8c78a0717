-- keep_claim.lua: keep an admitted identity's claim window open (its pass not picked up yet,
-- held back by its group's session cap), so the admission is not lost while it waits.
-- KEYS:  1 active, 2 sess (rg:{id}:<name>; src/store/keys.rs)
-- ARGV:  1 identity, 2 claim deadline ms, 3 now ms
-- Returns 1 when the admission stands (deadline raised to at least ARGV[2]), 0 when it is gone
-- (expired, left) or already a claimed session (which has its own expiry).
local active, sess, id, deadline = KEYS[1], KEYS[2], ARGV[1], tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if redis.call('HEXISTS', sess, id) == 1 then
  return 0
end
local score = redis.call('ZSCORE', active, id)
if not score or tonumber(score) <= now then
  return 0
end
if tonumber(score) < deadline then
  redis.call('ZADD', active, deadline, id)
end
return 1
