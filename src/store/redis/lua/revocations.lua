-- revocations.lua: read the revocation feed from an index on.
-- KEYS:  1 meta, 2 revoked (rg:{id}:<name>; what each holds: src/store/keys.rs)
-- ARGV:  1 first index wanted (counted from the feed's start, trimmed entries included),
--        2 most entries
-- Returns {next index, entries...}: entries from max(from, trimmed) on, and the index after the
-- last one returned.
local meta, revoked = KEYS[1], KEYS[2]
local from, most = tonumber(ARGV[1]), tonumber(ARGV[2])
local trimmed = tonumber(redis.call('HGET', meta, 'rev_trimmed')) or 0
if from < trimmed then
  from = trimmed
end
local entries = redis.call('LRANGE', revoked, from - trimmed, from - trimmed + most - 1)
local out = {from + #entries}
for _, e in ipairs(entries) do
  out[#out + 1] = e
end
return out
