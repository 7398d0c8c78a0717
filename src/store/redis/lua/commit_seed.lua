-- commit_seed.lua: commit a scheduled drop's shuffle seed; the first commit on any node wins.
-- KEYS:  1 meta (rg:{id}:<name>; what each holds: src/store/keys.rs)
-- ARGV:  1 seed (hex) proposed by this node
-- Returns the committed seed (the proposed one, or the one committed earlier).
redis.call('HSETNX', KEYS[1], 'seed', ARGV[1])
return redis.call('HGET', KEYS[1], 'seed')
