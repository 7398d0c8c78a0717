-- sale_state.lua: read a sale's counters in one atomic step.
-- KEYS:  1 stock (rg:{id}:<name>; what each holds: src/store/keys.rs)
-- Returns {available, reserved, confirmed, total, restocks}; zeros for an unknown sale.
local v = redis.call('HMGET', KEYS[1], 'available', 'reserved', 'confirmed', 'total', 'restocks')
return {tonumber(v[1]) or 0, tonumber(v[2]) or 0, tonumber(v[3]) or 0, tonumber(v[4]) or 0,
        tonumber(v[5]) or 0}
