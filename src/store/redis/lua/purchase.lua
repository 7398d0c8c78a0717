-- purchase.lua: reserve units atomically: idempotency, per-user limit, stock, then decrement,
-- record the reservation with its expiry and append the order event. All or nothing per
-- purchase (and per batch: a script runs whole or not at all).
-- KEYS:  1 stock, 2 buyers, 3 rsv, 4 rsv_exp, 5 orders (rg:{id}:<name>; what each holds:
--        src/store/keys.rs)
-- ARGV:  1 now ms, 2 expiry of reservations made now (ms), 3 per-user limit, then 5 per
--        purchase, in arrival order:
--        user, quantity (integer >= 1, checked by the caller too), keyed ('1' when the buyer
--        sent an idempotency key, '' when not), reservation id, the shop's user id ('' for
--        none; recorded as `user_id` on the `reserved` event). A keyed purchase's id is derived
--        from (sale, user, key) by the caller, so a retry names the same reservation and finds
--        it in rsv: no separate idempotency index (one hash lookup and one write less per
--        purchase). A batch: the Redis store coalesces the purchases that arrive while earlier
--        ones are in flight; they run one after the other exactly as single calls would.
-- Returns three entries per purchase, flat (kind, number, text): one nested reply table per
-- purchase was a measurable share of a batch, and the caller knows a new reservation's id,
-- quantity and expiry (its own id and quantity, and the batch's ARGV[2]):
--   'reserved', available_after, ''          (new reservation)
--   'existing', available_now, record        (keyed, and that reservation exists; as stored)
--   'limit', units_held, ''   'sold_out', reserved, ''   'insufficient', available, ''
--   'bad_quantity', 0, ''
-- A record is "state|user|quantity|expires_ms". The comparison is `available < quantity`, so
-- the last unit sells exactly once and stock never goes below zero.
local stock, buyers, rsv, rsv_exp, orders = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
-- Times and quantities go into records and events as the caller's strings: formatting Lua
-- numbers back into text is a measurable share of a batch.
local now, expires, limit = ARGV[1], ARGV[2], tonumber(ARGV[3])

-- The batch shares its reads and writes: stock counters, units held per user, and the new
-- reservation records live here and are written once at the end (a purchase
-- later in the batch sees them here first). Order events are appended one per reservation.
local v = redis.call('HMGET', stock, 'available', 'reserved')
local available, reserved = tonumber(v[1]) or 0, tonumber(v[2]) or 0
local held, users, listed = {}, {}, {}
local records, new_ids = {}, {}

-- Everything the batch may read, in two calls: the units each buyer holds and the stored
-- reservations of keyed purchases. One call per purchase and key was a sixth of a batch's
-- time (each redis.call from Lua costs about as much as the lookup it makes).
local stored = {}
do
  local who, ids, seen = {}, {}, {}
  for i = 4, #ARGV, 5 do
    local user = ARGV[i]
    if not seen[user] then
      seen[user] = true
      who[#who + 1] = user
    end
    if ARGV[i + 2] ~= '' then
      ids[#ids + 1] = ARGV[i + 3]
    end
  end
  if #who > 0 then
    local h = redis.call('HMGET', buyers, unpack(who))
    for j, user in ipairs(who) do
      held[user] = tonumber(h[j]) or 0
    end
  end
  if #ids > 0 then
    local r = redis.call('HMGET', rsv, unpack(ids))
    for j, id in ipairs(ids) do
      stored[id] = r[j]
    end
  end
end

local function purchase(user, qty_text, keyed, id, user_id)
  local qty = tonumber(qty_text)
  if qty == nil or qty < 1 or qty ~= math.floor(qty) then
    return 'bad_quantity', 0, ''
  end
  if keyed ~= '' then
    local rec = records[id] or stored[id]
    if rec then
      return 'existing', available, rec
    end
  end
  local h = held[user]
  if h + qty > limit then
    return 'limit', h, ''
  end
  if available == 0 then
    return 'sold_out', reserved, ''
  end
  if available < qty then
    return 'insufficient', available, ''
  end
  available, reserved = available - qty, reserved + qty
  if not listed[user] then
    users[#users + 1] = user
    listed[user] = true
  end
  held[user] = h + qty
  records[id] = 'reserved|' .. user .. '|' .. qty_text .. '|' .. expires
  new_ids[#new_ids + 1] = id
  if user_id == '' then
    redis.call('XADD', orders, '*', 'event', 'reserved', 'reservation_id', id, 'user', user,
      'quantity', qty_text, 'expires_at_ms', expires, 'at_ms', now)
  else
    redis.call('XADD', orders, '*', 'event', 'reserved', 'reservation_id', id, 'user', user,
      'user_id', user_id, 'quantity', qty_text, 'expires_at_ms', expires, 'at_ms', now)
  end
  return 'reserved', available, ''
end

local out, n = {}, 0
for i = 4, #ARGV, 5 do
  out[n + 1], out[n + 2], out[n + 3] =
    purchase(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4])
  n = n + 3
end
if #new_ids > 0 then
  redis.call('HSET', stock, 'available', available, 'reserved', reserved)
  local h, r = {}, {}
  for _, user in ipairs(users) do
    h[#h + 1] = user
    h[#h + 1] = held[user]
  end
  redis.call('HSET', buyers, unpack(h))
  for _, id in ipairs(new_ids) do
    r[#r + 1] = id
    r[#r + 1] = records[id]
  end
  redis.call('HSET', rsv, unpack(r))
  -- One expiry entry for the batch (its reservations share `expires`): the ids, space
  -- separated (ids never hold a space). A ZSET entry per reservation was the dearest write of
  -- a purchase; sweep.lua splits the entry again.
  redis.call('ZADD', rsv_exp, expires, table.concat(new_ids, ' '))
end
return out
