-- offer_transfer.lua: name a place by a one-time transfer code.
-- KEYS:  1 holder, 2 q, 3 active, 4 pre, 5 xfer:<code> (rg:{id}:<name>; what each holds:
--        src/store/keys.rs)
-- ARGV:  1 identity, 2 the offering ticket's holder generation, 3 the shop user id ('' for none),
--        4 code lifetime ms, 5 now ms
-- Returns 'moved' (the ticket is of an older generation: only the current holder may offer),
-- 'absent' (no waiting place, live admission or pre-queue entry), 'taken' (the code exists) or
-- 'offered'.
local holder, q, active, pre, code = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local id, gen, uid, ttl, now = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4], tonumber(ARGV[5])
if gen < (tonumber(redis.call('HGET', holder, id)) or 0) then
  return 'moved'
end
local exp = redis.call('ZSCORE', active, id)
if not redis.call('ZSCORE', q, id) and not (exp and tonumber(exp) > now)
    and redis.call('SISMEMBER', pre, id) == 0 then
  return 'absent'
end
-- The expiry is stored too: a claim checks it against the caller's clock (as the embedded store
-- does), and PX only cleans up.
local record = gen .. ' ' .. id .. ' ' .. (now + tonumber(ttl)) .. ' ' .. uid
if not redis.call('SET', code, record, 'PX', ttl, 'NX') then
  return 'taken'
end
return 'offered'
