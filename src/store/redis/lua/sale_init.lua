-- sale_init.lua: create a sale's stock record the first time any node starts with it.
-- KEYS:  1 stock (rg:{id}:<name>; what each holds: src/store/keys.rs)
-- ARGV:  1 initial stock
-- Returns 1 when this call created the record, 0 when it existed (config changes never reset
-- live stock; use add_stock).
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'available', ARGV[1], 'reserved', 0, 'confirmed', 0, 'total', ARGV[1])
return 1
