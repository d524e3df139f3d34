--[[ settle.lua: record the outcome of claimed tasks, in one batch.

An outcome is accepted only from the claim that holds the task: the token must
match and the task must still be running. Anything else (a worker that lost
its lease, a duplicate ack) is rejected and changes nothing: fencing.

KEYS[1]  state hash    KEYS[2]  tasks hash    KEYS[3]  errors hash
KEYS[4]  finished zset KEYS[5]  dead zset
then 3 KEYS per queue: inflight, delayed, wake
ARGV[1]  now_ms
ARGV[2]  retention_ms of finished tasks (0: delete at once)
ARGV[3]  max finished records to expire in this call
then 1 ARGV per outcome: 'kind 0x1f queue_index 0x1f token 0x1f id [0x1f value]'
(one string, not five arguments: encoding arguments is a large share of the
worker's per-task cost; 0x1f never occurs in ids, tokens or JSON)
  kind 'ok'    : succeeded                           no value
  kind 'retry' : retry at value (run_at_ms), error   value 'run_at|error JSON'
  kind 'dead'  : dead now with error                 value 'reason|error JSON'

Returns the ids whose outcome was rejected.
]]
local now = tonumber(ARGV[1])
local retention = tonumber(ARGV[2])
local rejected = {}

--! include errors.lua
--! include state.lua

local function split(value)
  local sep = string.find(value, '|', 1, true)
  return string.sub(value, 1, sep - 1), string.sub(value, sep + 1)
end

for i = 4, #ARGV do
  local kind, q, token, id, value = string.match(ARGV[i], '^([^\31]+)\31([^\31]+)\31([^\31]+)\31([^\31]+)\31?(.*)$')
  q = tonumber(q)
  local inflight, delayed, wake = KEYS[6 + q * 3], KEYS[7 + q * 3], KEYS[8 + q * 3]
  local raw = redis.call('HGET', KEYS[1], id)
  local st = state_or_nil(raw)  -- damaged: none, costing that task only
  if not st or st.s ~= 'running' or st.k ~= token then
    rejected[#rejected + 1] = id
  else
    redis.call('ZREM', inflight, id)
    st.k = nil
    if kind == 'ok' then
      if retention <= 0 then
        redis.call('HDEL', KEYS[1], id)
        redis.call('HDEL', KEYS[2], id)
        redis.call('HDEL', KEYS[3], id)
        st = nil
      else
        st.s = 'succeeded'
        st.tf = now
        redis.call('ZADD', KEYS[4], now, id)
      end
    elseif kind == 'retry' then
      local run_at, err = split(value)
      add_error(KEYS[3], id, cjson.decode(err))
      st.s = 'retrying'
      st.ra = tonumber(run_at)
      redis.call('ZADD', delayed, st.ra, id)
      local head = redis.call('ZRANGE', delayed, 0, 0)
      if head[1] == id and redis.call('LLEN', wake) == 0 then
        redis.call('LPUSH', wake, '1')
      end
    else
      local why, err = split(value)
      add_error(KEYS[3], id, cjson.decode(err))
      st.s = 'dead'
      st.tf = now
      st.why = why
      redis.call('ZADD', KEYS[5], now, id)
    end
    if st then redis.call('HSET', KEYS[1], id, cjson.encode(st)) end
  end
end

if retention > 0 then
  local old = redis.call('ZRANGEBYSCORE', KEYS[4], '-inf', now - retention,
    'LIMIT', 0, tonumber(ARGV[3]))
  if #old > 0 then
    redis.call('ZREM', KEYS[4], unpack(old))
    redis.call('HDEL', KEYS[1], unpack(old))
    redis.call('HDEL', KEYS[2], unpack(old))
    redis.call('HDEL', KEYS[3], unpack(old))
  end
end
return rejected
