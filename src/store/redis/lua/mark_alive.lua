-- mark_alive.lua: record a batch of waiters seen during one liveness interval.
-- KEYS:  1 alive:<interval>, the interval's bitmap (rg:{id}:<name>; what each holds:
--        src/store/keys.rs)
-- ARGV:  1 expire-at ms for the bitmap, 2.. sequence numbers seen
-- Returns the number of sequence numbers recorded.
-- One BITFIELD per 1,000 seqs instead of one SETBIT each: a flush of a busy room costs a handful
-- of commands in Redis, not one per waiter (Lua's unpack limit bounds the chunk).
local key = KEYS[1]
local n = #ARGV - 1
for first = 2, #ARGV, 1000 do
  local last = math.min(first + 999, #ARGV)
  local ops = {}
  for i = first, last do
    ops[#ops + 1] = 'SET'
    ops[#ops + 1] = 'u1'
    ops[#ops + 1] = ARGV[i]
    ops[#ops + 1] = 1
  end
  redis.call('BITFIELD', key, unpack(ops))
end
redis.call('PEXPIREAT', key, ARGV[1])
return n
