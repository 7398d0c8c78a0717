-- sweep.lua: expire reservations whose time ran out, returning their units to stock. Safe to
-- run on every node at once: each reservation is taken out of rsv_exp in the same atomic step
-- that returns its units, so the units come back exactly once.
-- KEYS:  1 stock, 2 buyers, 3 rsv, 4 rsv_exp, 5 orders
-- ARGV:  1 now ms, 2 most reservations per call
-- Returns the number of reservations expired.
local stock, buyers, rsv, rsv_exp, orders = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now, max = tonumber(ARGV[1]), tonumber(ARGV[2])
local due = redis.call('ZRANGEBYSCORE', rsv_exp, '-inf', now, 'LIMIT', 0, max)
local n = 0
for _, id in ipairs(due) do
  redis.call('ZREM', rsv_exp, id)
  local rec = redis.call('HGET', rsv, id)
  if rec then
    local state, user, q, exp = string.match(rec, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
    if state == 'reserved' then
      local qty = tonumber(q)
      redis.call('HINCRBY', stock, 'reserved', -qty)
      redis.call('HINCRBY', stock, 'available', qty)
      if redis.call('HINCRBY', buyers, user, -qty) <= 0 then
        redis.call('HDEL', buyers, user)
      end
      redis.call('HSET', rsv, id, 'expired|' .. user .. '|' .. qty .. '|' .. exp)
      redis.call('XADD', orders, '*', 'event', 'expired', 'reservation_id', id, 'user', user,
        'quantity', qty, 'at_ms', now)
      n = n + 1
    end
  end
end
return n
