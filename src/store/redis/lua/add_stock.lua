-- add_stock.lua: add units to a sale (or remove unsold ones with a negative count).
-- KEYS:  1 stock, 2 orders (rg:{id}:<name>; what each holds: src/store/keys.rs)
-- ARGV:  1 units (may be negative), 2 now ms
-- Returns {applied, available_after}; a removal never takes more than is available, so
-- reserved and confirmed units are never touched. Units added to a sold-out sale (one that
-- was set up, with nothing available and nothing reserved) count a restock (`restocks`), the
-- number waiters are told once each by.
local stock, orders = KEYS[1], KEYS[2]
local n, now = tonumber(ARGV[1]), tonumber(ARGV[2])
local v = redis.call('HMGET', stock, 'available', 'reserved', 'total')
local available, reserved = tonumber(v[1]) or 0, tonumber(v[2]) or 0
if n < 0 and -n > available then
  n = -available
end
if n > 0 and v[3] and available == 0 and reserved == 0 then
  redis.call('HINCRBY', stock, 'restocks', 1)
end
if n ~= 0 then
  redis.call('HINCRBY', stock, 'available', n)
  redis.call('HINCRBY', stock, 'total', n)
  redis.call('XADD', orders, '*', 'event', 'stock_changed', 'units', n, 'at_ms', now)
end
return {n, available + n}
