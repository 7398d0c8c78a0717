-- claim_coupon.lua: issue the next coupon serial to a user, once per user, never past the limit.
-- KEYS:  1 issued, 2 claimed, 3 log (rg:{id}:<name>; what each holds: src/store/keys.rs)
-- ARGV:  1 user, 2 limit, 3 now ms, 4 the shop's user id ('' for none; `user_id` on the log)
-- Returns {'new', serial} | {'existing', serial} | {'exhausted', issued}.
-- The check `issued >= limit` comes before INCR in the same atomic step, so at most `limit`
-- serials (1..limit) are ever issued.
local issued, claimed, log = KEYS[1], KEYS[2], KEYS[3]
local user, limit, now, user_id = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local have = redis.call('HGET', claimed, user)
if have then
  return {'existing', tonumber(have)}
end
local n = tonumber(redis.call('GET', issued)) or 0
if n >= limit then
  return {'exhausted', n}
end
n = redis.call('INCR', issued)
redis.call('HSET', claimed, user, n)
if user_id == '' then
  redis.call('XADD', log, '*', 'serial', n, 'user', user, 'at_ms', now)
else
  redis.call('XADD', log, '*', 'serial', n, 'user', user, 'user_id', user_id, 'at_ms', now)
end
return {'new', n}
