-- mark_alive.lua: record a batch of waiters seen during one liveness interval.
-- KEYS:  1 the interval's bitmap "rg:{room}:alive:<interval>"
-- ARGV:  1 expire-at ms for the bitmap, 2.. sequence numbers seen
-- Returns the number of sequence numbers recorded.
local key = KEYS[1]
for i = 2, #ARGV do
  redis.call('SETBIT', key, ARGV[i], 1)
end
redis.call('PEXPIREAT', key, ARGV[1])
return #ARGV - 1
