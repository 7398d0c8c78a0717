-- freeze_prequeue.lua: freeze a scheduled drop's pre-queue (first call only; see rg_freeze_pre).
-- KEYS:  1 meta, 2 seq, 3 pre (rg:{id}:<name>; what each holds: src/store/keys.rs)
-- ARGV:  none
-- Returns {frozen (1), base, count, assigned}: seqs base+1 .. base+count are reserved for the
-- pre-queue's count members; assigned of them have their seq so far.
local meta, seqkey, pre = KEYS[1], KEYS[2], KEYS[3]
rg_freeze_pre(meta, pre, seqkey)
local _, base, count, assigned = rg_pre(meta)
return {1, base, count, assigned}
