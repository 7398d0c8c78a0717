-- settle.lua: move one reservation out of `reserved`: confirm (paid), release (given back by
-- the shop) or expire (swept). Exactly-once: a reservation leaves `reserved` one time only.
-- KEYS:  1 stock, 2 buyers, 3 rsv, 4 rsv_exp, 5 orders (rg:{id}:<name>; what each holds:
--        src/store/keys.rs). rsv_exp is unused: its entry stays, the sweep skips a reservation
--        that is no longer reserved.
-- ARGV:  1 reservation id, 2 target 'confirmed' | 'released' | 'expired', 3 now ms
-- Returns {outcome, state_after, quantity}: outcome 'done' (transition made), 'already' (it is
-- already in the target state), 'conflict' (it is in another final state), 'unknown'.
-- Confirming a reservation whose time ran out expires it instead ('conflict', 'expired').
local stock, buyers, rsv, orders = KEYS[1], KEYS[2], KEYS[3], KEYS[5]
local id, target, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local rec = redis.call('HGET', rsv, id)
if not rec then
  return {'unknown', '', 0}
end
local state, user, q, exp = string.match(rec, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
local qty, expires = tonumber(q), tonumber(exp)
if state ~= 'reserved' then
  if state == target then
    return {'already', state, qty}
  end
  return {'conflict', state, qty}
end
local to = target
if target == 'confirmed' and expires <= now then
  to = 'expired'
end
if target == 'expired' and expires > now then
  return {'conflict', state, qty}
end
redis.call('HINCRBY', stock, 'reserved', -qty)
if to == 'confirmed' then
  redis.call('HINCRBY', stock, 'confirmed', qty)
else
  redis.call('HINCRBY', stock, 'available', qty)
  local left = redis.call('HINCRBY', buyers, user, -qty)
  if left <= 0 then
    redis.call('HDEL', buyers, user)
  end
end
redis.call('HSET', rsv, id, to .. '|' .. user .. '|' .. qty .. '|' .. expires)
redis.call('XADD', orders, '*', 'event', to, 'reservation_id', id, 'user', user,
  'quantity', qty, 'at_ms', now)
if to ~= target then
  return {'conflict', to, qty}
end
return {'done', to, qty}
