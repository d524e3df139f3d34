--[[ release.lua: hand claimed tasks back at once (graceful shutdown).

The task goes back to the front of its ready list, claimable immediately rather
than after its lease; the interrupted attempt is not counted.

KEYS[1]  state hash
then 3 KEYS per queue: ready, inflight, wake
ARGV[1]  now_ms
then 3 ARGV per task: id, token, queue_index

Returns the number of tasks handed back.
]]
--! include state.lua
local released = 0
local woken = {}
for i = 2, #ARGV, 3 do
  local id, token, q = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local ready, inflight, wake = KEYS[2 + q * 3], KEYS[3 + q * 3], KEYS[4 + q * 3]
  local raw = redis.call('HGET', KEYS[1], id)
  local st = state_or_nil(raw)  -- damaged: none, costing that task only
  if st and st.s == 'running' and st.k == token then
    st.s = 'queued'
    st.a = st.a - 1
    st.k = nil
    st.w = nil
    redis.call('HSET', KEYS[1], id, cjson.encode(st))
    redis.call('ZREM', inflight, id)
    redis.call('RPUSH', ready, id)
    released = released + 1
    if not woken[q] and redis.call('LLEN', wake) == 0 then
      redis.call('LPUSH', wake, '1')
    end
    woken[q] = true
  end
end
return released
