-- lookup.lua: where an identity stands, without making a place (a pre-queue ticket's poll).
-- KEYS:  1 meta, 2 q, 3 active, 4 pre (rg:{id}:<name>; what each holds: src/store/keys.rs)
-- ARGV:  1 key prefix "rg:{room}:", 2 identity, 3 now ms, 4 liveness interval ms, 5 idle ms
-- Returns {status, seq}: 'waiting' with its seq (marked seen now), 'admitted' (a live admission),
-- 'prequeue' (in the pre-queue, no seq yet), or 'absent'; seq 0 unless waiting.
local meta, q, active, pre = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local prefix, id = ARGV[1], ARGV[2]
local now, interval, idle = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])
local s = redis.call('ZSCORE', q, id)
if s then
  rg_mark_alive(prefix, tonumber(s), math.floor(now / interval), interval, idle)
  return {'waiting', tonumber(s)}
end
local exp = redis.call('ZSCORE', active, id)
if exp and tonumber(exp) > now then
  return {'admitted', 0}
end
local frozen = rg_pre(meta)
if (not frozen or rg_pre_pending(meta)) and redis.call('SISMEMBER', pre, id) == 1 then
  return {'prequeue', 0}
end
return {'absent', 0}
