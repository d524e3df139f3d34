--[[ renew.lua: extend the leases of tasks a worker is running (heartbeat).

KEYS[1]  state hash
then 1 KEY per queue: inflight zset
ARGV[1]  now_ms   ARGV[2]  lease_ms
then 3 ARGV per task: id, token, queue_index

Returns the ids whose lease is lost (token no longer matches: the lease
expired and the task was recovered, or it was settled elsewhere). The worker
should stop working on those; its ack would be rejected anyway.
]]
--! include state.lua
local deadline = tonumber(ARGV[1]) + tonumber(ARGV[2])
local lost = {}
for i = 3, #ARGV, 3 do
  local id, token, q = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  local raw = redis.call('HGET', KEYS[1], id)
  local st = state_or_nil(raw)  -- damaged: none, costing that task only
  if st and st.s == 'running' and st.k == token then
    redis.call('ZADD', KEYS[2 + q], 'XX', deadline, id)
  else
    lost[#lost + 1] = id
  end
end
return lost
