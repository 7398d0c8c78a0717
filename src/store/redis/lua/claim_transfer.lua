-- claim_transfer.lua: move a place to the device that presents its transfer code (once).
-- KEYS:  1 xfer:<code>, 2 holder, 3 revoked, 4 meta, 5 q, 6 active, 7 pre (rg:{id}:<name>; what
--        each holds: src/store/keys.rs)
-- ARGV:  1 now ms, 2 until ms (how long nodes keep the revocation), 3 claim id (named by the
--        claiming node before the call; no spaces)
-- Returns {'unknown'} (no such code: never made, expired or used), {'stale'} (the place changed
-- holder, ended or is gone since the code was made; the code is spent), or
-- {'moved', identity, new generation, seq (0 if admitted or in a pre-queue), admitted (1 / 0),
--  uid}. A move raises the identity's holder generation and appends
-- `identity gen transferred until` to the revocation feed. A move leaves the code as
-- `moved <claim id> <the reply's fields>` for 5 minutes: the same claim id repeated (a retry
-- of a call that timed out after it ran) gets the same reply again, any other claim
-- 'unknown'. So a claim whose answer was lost is not a place lost.
local code, holder, revoked, meta = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local q, active, pre = KEYS[5], KEYS[6], KEYS[7]
local now, keep = tonumber(ARGV[1]), ARGV[2]
local v = redis.call('GET', code)
if not v then
  return {'unknown'}
end
local by, until_ms = string.match(v, '^moved (%S+) (%d+) ')
if by then
  if by ~= ARGV[3] or tonumber(until_ms) <= now then
    return {'unknown'}
  end
  local mid, mgen, mseq, madm, muid =
    string.match(v, '^moved %S+ %d+ (%S+) (%d+) (%d+) (%d) (.*)$')
  return {'moved', mid, tonumber(mgen), tonumber(mseq), tonumber(madm), muid}
end
redis.call('DEL', code)
local gen, id, exp, uid = string.match(v, '^(%d+) (%S+) (%d+) (.*)$')
gen = tonumber(gen)
if not gen or tonumber(exp) <= now then
  return {'unknown'}
end
if gen ~= (tonumber(redis.call('HGET', holder, id)) or 0) then
  return {'stale'}
end
local seq, admitted = redis.call('ZSCORE', q, id), 0
if not seq then
  local exp = redis.call('ZSCORE', active, id)
  if exp and tonumber(exp) > now then
    admitted = 1
  elseif redis.call('SISMEMBER', pre, id) == 0 then
    return {'stale'}
  end
end
redis.call('HSET', holder, id, gen + 1)
redis.call('RPUSH', revoked, id .. ' ' .. (gen + 1) .. ' transferred ' .. keep)
redis.call('HINCRBY', meta, 'rev_total', 1)
seq = tonumber(seq) or 0
redis.call('SET', code, 'moved ' .. ARGV[3] .. ' ' .. (now + 300000) .. ' ' .. id .. ' '
  .. (gen + 1) .. ' ' .. seq .. ' ' .. admitted .. ' ' .. uid, 'PX', 300000)
return {'moved', id, gen + 1, seq, admitted, uid}
