-- claim.lua: an admitted identity picks up its pass; the session clock starts at the first claim.
-- KEYS:  1 active, 2 sess, 3 holder (rg:{id}:<name>; what each holds: src/store/keys.rs)
-- ARGV:  1 identity, 2 now ms, 3 session length ms, 4 the asking ticket's holder generation
--        ('' : any)
-- Returns the session expiry in ms, the same on every later claim (polling again never extends a
-- session); -1 when the asking ticket is of an older holder generation than the place's (moved
-- to another device, or ended); or nil when the identity holds no live admission (never
-- admitted, left, evicted, or its session or claim window expired).
local active, sess, holder = KEYS[1], KEYS[2], KEYS[3]
local id, now, session, held = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
if held ~= '' and tonumber(held) < (tonumber(redis.call('HGET', holder, id)) or 0) then
  return -1
end
local exp = redis.call('ZSCORE', active, id)
if not exp or tonumber(exp) <= now then
  return false
end
local claimed = redis.call('HGET', sess, id)
if claimed then
  return tonumber(claimed)
end
local expiry = now + session
redis.call('ZADD', active, expiry, id)
redis.call('HSET', sess, id, expiry)
return expiry
