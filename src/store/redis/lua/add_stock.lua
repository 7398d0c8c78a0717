-- add_stock.lua: add units to a sale (or remove unsold ones with a negative count).
-- KEYS:  1 stock, 2 orders (rg:{id}:<name>; what each holds: src/store/keys.rs)
-- ARGV:  1 units (may be negative), 2 now ms
-- Returns {applied, available_after}; a removal never takes more than is available, so
-- reserved and confirmed units are never touched.
local stock, orders = KEYS[1], KEYS[2]
local n, now = tonumber(ARGV[1]), tonumber(ARGV[2])
local available = tonumber(redis.call('HGET', stock, 'available')) or 0
if n < 0 and -n > available then
  n = -available
end
if n ~= 0 then
  redis.call('HINCRBY', stock, 'available', n)
  redis.call('HINCRBY', stock, 'total', n)
  redis.call('XADD', orders, '*', 'event', 'stock_changed', 'units', n, 'at_ms', now)
end
return {n, available + n}
