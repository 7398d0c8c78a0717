-- group_release.lua: drop a shopper's session hold in a room of a group (the session ended).
-- KEYS:  1 holds (rg:{group:<id>}:holds; src/store/keys.rs)
-- ARGV:  1 identity, 2 room, 3 now ms
-- Returns 1 when a live hold was dropped, 0 otherwise. Expired holds go too.
local holds, id, room, now = KEYS[1], ARGV[1], ARGV[2], tonumber(ARGV[3])
local raw = redis.call('HGET', holds, id)
if not raw then
  return 0
end
local kept, dropped = {}, 0
for r, u in string.gmatch(raw, '([^ ;]+) (%d+)') do
  if tonumber(u) > now then
    if r == room then
      dropped = 1
    else
      kept[#kept + 1] = r .. ' ' .. u
    end
  end
end
if #kept > 0 then
  redis.call('HSET', holds, id, table.concat(kept, ';'))
else
  redis.call('HDEL', holds, id)
end
return dropped
