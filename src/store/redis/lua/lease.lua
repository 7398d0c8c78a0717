-- lease.lua: a node's lease on the room's session slots for a store outage (on_store_error =
-- "capped"). Leased slots are held back from every other admission (rg_free_slots subtracts
-- meta.leased until meta.leased_until), so a node that admits on its lease while it cannot
-- reach Redis never takes a slot another node or the pacer gave away.
-- KEYS:  1 meta, 2 leases, 3 active, 4 buying (rg:{id}:<name>; what each holds: src/store/keys.rs)
-- ARGV:  1 node id, 2 now ms, 3 slots wanted, 4 lease length ms, 5 max active (the node's),
--        6 admission cap of a room with a sale (-1: no sale)
-- Expired leases are dropped. A node keeps the slots it holds (up to what it asks) and grows by
-- a share of the slots nobody holds, split with the pacer and the other holders (unheld /
-- (holders + 1)); and no holder gets more than max_active / (4 * holders), so leases together
-- never hold more than a quarter of the room's sessions. A grant of 0 drops the node's lease.
-- Returns {granted, lease holders (this node included), leased total}.
local meta, leases, active, buying = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local node, now = ARGV[1], tonumber(ARGV[2])
local want, ttl, cap = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[6])
local _, max_active = rg_settings(meta, 0, tonumber(ARGV[5]), 1)
local others, holders, until_ms, mine = 0, 1, now + ttl, 0
local all = redis.call('HGETALL', leases)
for i = 1, #all, 2 do
  local slots, exp = string.match(all[i + 1], '^(%d+) (%d+)$')
  if not exp or tonumber(exp) <= now then
    redis.call('HDEL', leases, all[i])
  elseif all[i] == node then
    mine = tonumber(slots)
  else
    others = others + tonumber(slots)
    holders = holders + 1
    until_ms = math.max(until_ms, tonumber(exp))
  end
end
local n = redis.call('ZCARD', active)
local free = max_active - n - others
if cap >= 0 then
  free = math.min(free, cap - (n - redis.call('SCARD', buying)) - others)
end
local unheld = math.max(free - mine, 0)
local grant = math.min(want, mine + math.floor(unheld / (holders + 1)),
  math.floor(max_active / (4 * holders)))
grant = math.max(0, math.min(grant, free))
if grant > 0 then
  redis.call('HSET', leases, node, grant .. ' ' .. (now + ttl))
else
  redis.call('HDEL', leases, node)
  holders = holders - 1
end
redis.call('HSET', meta, 'leased', others + grant, 'leased_until', until_ms)
return {grant, holders, others + grant}
