-- pre_scan.lua: one page of a scheduled drop's pre-queue members (SSCAN; pages may repeat a
-- member, so the caller deduplicates).
-- KEYS:  1 pre (rg:{id}:<name>; what each holds: src/store/keys.rs)
-- ARGV:  1 cursor, 2 page size hint
-- Returns {next cursor ("0" when done), {members...}}.
return redis.call('SSCAN', KEYS[1], ARGV[1], 'COUNT', ARGV[2])
