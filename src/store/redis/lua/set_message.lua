-- set_message.lua: sets a room's live message and gives it the next version in one step, so a
-- node that reads a version reads the message it belongs to.
-- KEYS:  1 meta (rg:{id}:meta; src/store/keys.rs)
-- ARGV:  1 the message (the operator's JSON; opaque to the store)
-- Returns the new version (1, 2, ... per room).
local v = redis.call('HINCRBY', KEYS[1], 'msg_v', 1)
redis.call('HSET', KEYS[1], 'msg', ARGV[1])
return v
