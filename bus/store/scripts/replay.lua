--[[ replay.lua: move dead tasks of one queue back to that queue (redrive).

Replay moves, never copies: a task leaves the dead zset and re-enters its ready
list in the same step, so two operators replaying the same task at the same
moment run it once (the second finds it no longer dead and skips it). The
attempt count starts again from 0; the error history stays, the replay count
`rp` goes up and `rh` keeps the last replays (time, when and why it had died).

KEYS[1]  state hash      (id -> mutable state JSON)
KEYS[2]  dead zset       (id -> dead_ms)
KEYS[3]  ready list      of the queue
KEYS[4]  wake list       of the queue
KEYS[5]  queues set      (names of the app's queues)
KEYS[6]  app wake list   (woken when the app gains a new queue, for '*' workers)
ARGV[1]  now_ms
ARGV[2]  queue name
then the task ids, oldest dead first

Returns one integer per id: 1 replayed, 0 skipped (not dead any more).
]]
--! include state.lua
local now = tonumber(ARGV[1])
local keep = 20
local out = {}
local ready = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local raw = redis.call('HGET', KEYS[1], id)
  local st = state_or_nil(raw)  -- damaged: none, costing that task only
  if st and st.s == 'dead' and redis.call('ZSCORE', KEYS[2], id) then
    local hist = st.rh or {}
    hist[#hist + 1] = {at = now, died = st.tf, why = st.why}
    while #hist > keep do table.remove(hist, 1) end
    st.rh = hist
    st.s = 'queued'
    st.a = 0
    st.rp = (st.rp or 0) + 1
    st.tr = now
    st.why = nil
    st.tf = nil
    st.ra = nil
    st.k = nil
    st.w = nil
    redis.call('HSET', KEYS[1], id, cjson.encode(st))
    redis.call('ZREM', KEYS[2], id)
    ready[#ready + 1] = id
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
if #ready > 0 then
  redis.call('LPUSH', KEYS[3], unpack(ready))
  if redis.call('SADD', KEYS[5], ARGV[2]) == 1 and redis.call('LLEN', KEYS[6]) == 0 then
    redis.call('LPUSH', KEYS[6], '1')
  end
  if redis.call('LLEN', KEYS[4]) == 0 then
    redis.call('LPUSH', KEYS[4], '1')
  end
end
return out
