-- group_hold.lua: take (or renew) a shopper's session hold in a room of a group, unless the
-- shopper already holds as many sessions in other rooms of the group as the group allows.
-- KEYS:  1 holds (rg:{group:<id>}:holds; src/store/keys.rs)
-- ARGV:  1 identity, 2 room, 3 until ms (the session's end plus the margin), 4 most holds per
--        shopper, 5 now ms, 6 margin ms (GROUP_HOLD_MARGIN_MS)
-- Returns {1} when granted, or {0, room, room, ...}: the rooms whose holds stand in the way.
-- Holds past their until are dropped as they are met. A hold in the same room with more than
-- the margin left stands for the session still running (its pass picked up again): its end is
-- kept, so a re-pickup never holds the other rooms past the session. One within the margin
-- stands for a session already over and is replaced by the new until.
local holds, id, room = KEYS[1], ARGV[1], ARGV[2]
local hold_end, most, now = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local margin = tonumber(ARGV[6])
local kept, others = {}, {}
local mine = hold_end
local raw = redis.call('HGET', holds, id)
if raw then
  for r, u in string.gmatch(raw, '([^ ;]+) (%d+)') do
    u = tonumber(u)
    if u > now then
      if r == room then
        if u - now > margin then
          mine = u
        end
      else
        kept[#kept + 1] = r .. ' ' .. u
        others[#others + 1] = r
      end
    end
  end
end
if #others >= most then
  if #kept > 0 then
    redis.call('HSET', holds, id, table.concat(kept, ';'))
  else
    redis.call('HDEL', holds, id)
  end
  local out = {0}
  for _, r in ipairs(others) do
    out[#out + 1] = r
  end
  return out
end
kept[#kept + 1] = room .. ' ' .. mine
redis.call('HSET', holds, id, table.concat(kept, ';'))
-- The hash lives as long as its longest hold (plus a minute of clock skew); only ever
-- lengthened, so no other shopper's hold is cut short.
local want = mine - now + 60000
local ttl = redis.call('PTTL', holds)
if ttl < want then
  redis.call('PEXPIRE', holds, want)
end
return {1}
