-- sweep.lua: expire reservations whose time ran out, returning their units to stock. Safe to
-- run on every node at once: each expiry entry is taken out of rsv_exp in the same atomic step
-- that returns its units, so the units come back exactly once.
-- KEYS:  1 stock, 2 buyers, 3 rsv, 4 rsv_exp, 5 orders (rg:{id}:<name>; what each holds:
--        src/store/keys.rs)
-- ARGV:  1 now ms, 2 most reservations per call
-- rsv_exp holds one entry per purchase batch: the batch's reservation ids, space separated,
-- scored by their common expiry (an entry written before batching holds one id: the same).
-- Settling a reservation leaves its id there; it is skipped here, as it is no longer
-- 'reserved'. A call expires at most `max` reservations and looks at most 8 * max ids (so a
-- run of settled ones cannot make one call long); ids of an entry it has no room for go back
-- under the same score.
-- Returns the number of reservations expired.
local stock, buyers, rsv, rsv_exp, orders = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local now, max = tonumber(ARGV[1]), tonumber(ARGV[2])

local function expire(id)
  local rec = redis.call('HGET', rsv, id)
  if not rec then
    return false
  end
  local state, user, q, exp = string.match(rec, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)$')
  if state ~= 'reserved' then
    return false
  end
  local qty = tonumber(q)
  redis.call('HINCRBY', stock, 'reserved', -qty)
  redis.call('HINCRBY', stock, 'available', qty)
  if redis.call('HINCRBY', buyers, user, -qty) <= 0 then
    redis.call('HDEL', buyers, user)
  end
  redis.call('HSET', rsv, id, 'expired|' .. user .. '|' .. qty .. '|' .. exp)
  redis.call('XADD', orders, '*', 'event', 'expired', 'reservation_id', id, 'user', user,
    'quantity', qty, 'at_ms', now)
  return true
end

local n, looked, most = 0, 0, max * 8
while n < max and looked < most do
  local due = redis.call('ZRANGEBYSCORE', rsv_exp, '-inf', now, 'WITHSCORES', 'LIMIT', 0, 1)
  if #due == 0 then
    break
  end
  local entry, score = due[1], due[2]
  redis.call('ZREM', rsv_exp, entry)
  local rest = {}
  for id in string.gmatch(entry, '[^ ]+') do
    if n < max and looked < most then
      looked = looked + 1
      if expire(id) then
        n = n + 1
      end
    else
      rest[#rest + 1] = id
    end
  end
  if #rest > 0 then
    redis.call('ZADD', rsv_exp, score, table.concat(rest, ' '))
  end
end
return n
