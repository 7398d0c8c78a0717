-- purchase.lua: reserve units atomically: idempotency, per-user limit, stock, then decrement,
-- record the reservation with its expiry and append the order event. All or nothing per
-- purchase.
-- KEYS:  1 stock (HASH), 2 buyers (HASH user -> units held), 3 rsv (HASH id -> record),
--        4 rsv_exp (ZSET id -> expiry ms), 5 idem (HASH user NUL key -> id), 6 orders (STREAM)
-- ARGV:  1 now ms, 2 reservation ms, 3 per-user limit, then 4 per purchase, in arrival order:
--        user, quantity (integer >= 1, checked by the caller too), idempotency key ('' = none),
--        new reservation id. A batch: the Redis store coalesces the purchases that arrive while
--        earlier ones are in flight; they run one after the other exactly as single calls would.
-- Returns one reply per purchase, each one of
--   {'reserved', id, quantity, expires_ms, available_after}    (new reservation)
--   {'existing', id, quantity, expires_ms, available_now, state} (same idempotency key)
--   {'limit', units_held}   {'sold_out', reserved}   {'insufficient', available}
--   {'bad_quantity', 0}
-- A record is "state|user|quantity|expires_ms". The comparison is `available < quantity`, so
-- the last unit sells exactly once and stock never goes below zero.
local stock, buyers, rsv, rsv_exp, idem, orders = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local now, hold, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])

local function purchase(user, qty, key, id)
  if qty == nil or qty < 1 or qty ~= math.floor(qty) then
    return {'bad_quantity', 0}
  end
  local ikey = user .. '\0' .. key
  if key ~= '' then
    local existing = redis.call('HGET', idem, ikey)
    if existing then
      local rec = redis.call('HGET', rsv, existing) or ''
      local state, _, q, exp = string.match(rec, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
      local avail = tonumber(redis.call('HGET', stock, 'available')) or 0
      return {'existing', existing, tonumber(q) or 0, tonumber(exp) or 0, avail, state or 'unknown'}
    end
  end
  local held = tonumber(redis.call('HGET', buyers, user)) or 0
  if held + qty > limit then
    return {'limit', held}
  end
  local v = redis.call('HMGET', stock, 'available', 'reserved')
  local available, reserved = tonumber(v[1]) or 0, tonumber(v[2]) or 0
  if available == 0 then
    return {'sold_out', reserved}
  end
  if available < qty then
    return {'insufficient', available}
  end
  local expires = now + hold
  redis.call('HINCRBY', stock, 'available', -qty)
  redis.call('HINCRBY', stock, 'reserved', qty)
  redis.call('HINCRBY', buyers, user, qty)
  redis.call('HSET', rsv, id, 'reserved|' .. user .. '|' .. qty .. '|' .. expires)
  redis.call('ZADD', rsv_exp, expires, id)
  if key ~= '' then
    redis.call('HSET', idem, ikey, id)
  end
  redis.call('XADD', orders, '*', 'event', 'reserved', 'reservation_id', id, 'user', user,
    'quantity', qty, 'expires_at_ms', expires, 'at_ms', now)
  return {'reserved', id, qty, expires, available - qty}
end

local out = {}
for i = 4, #ARGV, 4 do
  out[#out + 1] = purchase(ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3])
end
return out
