--[[ purge.lua: delete dead tasks for good: record, state, errors, dead entry.

Only tasks that are dead are touched: a task replayed a moment ago (no longer
in the dead zset, or no longer in state 'dead') is left alone. A dead entry
whose state is already gone is removed as well.

KEYS[1]  state hash    KEYS[2]  tasks hash    KEYS[3]  errors hash
KEYS[4]  dead zset
ARGV     the task ids

Returns one integer per id: 1 purged, 0 skipped (not dead).
]]
local out = {}
for i = 1, #ARGV do
  local id = ARGV[i]
  local purged = 0
  if redis.call('ZSCORE', KEYS[4], id) then
    local raw = redis.call('HGET', KEYS[1], id)
    local st = raw and cjson.decode(raw)
    if not st or st.s == 'dead' then
      redis.call('HDEL', KEYS[1], id)
      redis.call('HDEL', KEYS[2], id)
      redis.call('HDEL', KEYS[3], id)
      redis.call('ZREM', KEYS[4], id)
      purged = 1
    end
  end
  out[#out + 1] = purged
end
return out
