-- reconcile.lua: a node back from a store outage records the sessions it admitted on its lease
-- (on_store_error = "capped"), so they count against max_active and the rate from now on, and
-- gives its lease back (its next lease call asks afresh).
-- KEYS:  1 meta, 2 q, 3 active, 4 sess, 5 leases (rg:{id}:<name>; what each holds:
--        src/store/keys.rs)
-- ARGV:  1 node id, 2 now ms, 3 admit per minute (the node's), 4 bucket burst, then pairs:
--        identity, session expiry ms
-- Each identity leaves the queue (it was admitted out of it) and becomes an admitted, claimed
-- session; one that holds a live admission already keeps it, running at least to its expiry
-- here, and is not counted again. The admissions are taken from the token bucket, which
-- may go below zero: the room then admits nobody until the outage's admissions are paid back.
-- Returns the number of sessions recorded.
local meta, q, active, sess, leases = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local node, now = ARGV[1], tonumber(ARGV[2])
local per_min, _, burst = rg_settings(meta, tonumber(ARGV[3]), 0, tonumber(ARGV[4]))
local recorded = 0
for i = 5, #ARGV, 2 do
  local id, exp = ARGV[i], tonumber(ARGV[i + 1])
  redis.call('ZREM', q, id)
  local held = redis.call('ZSCORE', active, id)
  if exp > now then
    if held and tonumber(held) > now then
      -- Admitted by the store before the outage and not yet claimed: its pass runs to exp.
      redis.call('ZADD', active, 'GT', exp, id)
      redis.call('HSETNX', sess, id, exp)
    else
      redis.call('ZADD', active, exp, id)
      redis.call('HSET', sess, id, exp)
      recorded = recorded + 1
    end
  end
end
if recorded > 0 then
  redis.call('HINCRBY', meta, 'admitted', recorded)
  local tokens, ts = rg_refill(meta, now, per_min, burst)
  rg_save_tokens(meta, tokens - recorded, ts)
end
local mine = redis.call('HGET', leases, node)
if mine then
  redis.call('HDEL', leases, node)
  local slots = tonumber(string.match(mine, '^(%d+)')) or 0
  local leased = tonumber(redis.call('HGET', meta, 'leased')) or 0
  redis.call('HSET', meta, 'leased', math.max(leased - slots, 0))
end
return recorded
