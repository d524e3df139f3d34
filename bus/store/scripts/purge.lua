--[[ purge.lua: delete dead tasks for good: record, state, errors, dead entry.

Only tasks that are dead are touched: a task replayed a moment ago (no longer
in the dead zset, or in a live state again) is left alone. A dead entry whose
state is gone, does not decode or names no known state is removed as well.

KEYS[1]  state hash    KEYS[2]  tasks hash    KEYS[3]  errors hash
KEYS[4]  dead zset
ARGV     the task ids

Returns one integer per id: 1 purged, 0 skipped (not dead).
]]
--! include state.lua
local live = {scheduled = true, queued = true, running = true, retrying = true, succeeded = true}
local out = {}
for i = 1, #ARGV do
  local id = ARGV[i]
  local purged = 0
  if redis.call('ZSCORE', KEYS[4], id) then
    local raw = redis.call('HGET', KEYS[1], id)
    local st = state_or_nil(raw)  -- damaged: none, costing that task only
    -- Not dead means a known live state (replayed, or running again); a state
    -- that names none is damage, and a dead letter with it is purged too.
    if not st or not live[st.s] then
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
