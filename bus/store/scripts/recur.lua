--[[ recur.lua: move a recurring task to its next occurrence, in one step.

The recurring hash names, per recurring task, its current occurrence (entry
JSON: slot, id, fp, queue). The move happens only if the hash still names the
occurrence (and fingerprint) the caller saw: compare-and-set, so any number of
workers may attempt the same move at once; one wins, the others change
nothing and get the current entry back.

The current occurrence is deleted if it is still waiting (scheduled, queued or
retrying); a running one is left to finish, and its outcome no longer moves
the chain. The new occurrence is added as enqueue.lua adds a task (a known id
is left as it is).

KEYS[1]  recurring hash (name -> entry JSON)
KEYS[2]  tasks hash     KEYS[3]  state hash      KEYS[4]  errors hash
KEYS[5]  queues set     KEYS[6]  app wake list
KEYS[7]  ready list     KEYS[8]  delayed zset    of the current occurrence's queue
KEYS[9]  ready list     KEYS[10] delayed zset    KEYS[11] wake list   of the new one's
ARGV[1]  now_ms         ARGV[2]  name
ARGV[3]  the current occurrence id the caller saw ('' = no entry)
ARGV[4]  the fingerprint the caller saw ('' = do not compare)
ARGV[5]  the new entry JSON ('' = remove the recurring task)
ARGV[6]  new occurrence id   ARGV[7]  its record   ARGV[8]  max attempts
ARGV[9]  run_at_ms           ARGV[10] the new occurrence's queue name
ARGV[11] '1': apply only if the current occurrence still waits (it is replaced)

Returns {1} when applied, {0, current entry JSON or ''} when it had changed.
]]
local now = tonumber(ARGV[1])
local raw = redis.call('HGET', KEYS[1], ARGV[2])
local cur = raw and cjson.decode(raw)
local cur_id = cur and cur.id or ''
if cur_id ~= ARGV[3] or (cur and ARGV[4] ~= '' and cur.fp ~= ARGV[4]) then
  return {0, raw or ''}
end

if cur_id ~= '' then
  local st_raw = redis.call('HGET', KEYS[3], cur_id)
  local st = st_raw and cjson.decode(st_raw)
  local waiting = st and (st.s == 'scheduled' or st.s == 'queued' or st.s == 'retrying')
  if ARGV[11] == '1' and not waiting then
    return {0, raw}
  end
  if waiting then
    redis.call('ZREM', KEYS[8], cur_id)
    redis.call('LREM', KEYS[7], 0, cur_id)
    redis.call('HDEL', KEYS[2], cur_id)
    redis.call('HDEL', KEYS[3], cur_id)
    redis.call('HDEL', KEYS[4], cur_id)
  end
end

if ARGV[5] == '' then
  redis.call('HDEL', KEYS[1], ARGV[2])
  return {1}
end

local id = ARGV[6]
if redis.call('HEXISTS', KEYS[3], id) == 0 then
  local run_at = tonumber(ARGV[9])
  local st = {a = 0, m = tonumber(ARGV[8]), tc = now}
  local wake = false
  if run_at > now then
    st.s = 'scheduled'
    st.ra = run_at
    redis.call('ZADD', KEYS[10], run_at, id)
    wake = redis.call('ZRANGE', KEYS[10], 0, 0)[1] == id
  else
    st.s = 'queued'
    redis.call('LPUSH', KEYS[9], id)
    wake = true
  end
  redis.call('HSET', KEYS[2], id, ARGV[7])
  redis.call('HSET', KEYS[3], id, cjson.encode(st))
  if redis.call('SADD', KEYS[5], ARGV[10]) == 1 and redis.call('LLEN', KEYS[6]) == 0 then
    redis.call('LPUSH', KEYS[6], '1')
  end
  if wake and redis.call('LLEN', KEYS[11]) == 0 then
    redis.call('LPUSH', KEYS[11], '1')
  end
end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[5])
return {1}
