--[[ claim.lua: claim up to N tasks from an app's queues, first queue first.

Every worker runs this; there is no separate recovery or scheduler process.
Before claiming, for each queue it
  1. recovers tasks whose lease expired (worker killed, paused or cut off):
     back to the front of the ready list, or dead when out of attempts;
  2. promotes delayed tasks that are due to the back of the ready list.
Claiming moves a task id from the ready list into the in-flight zset with a
lease deadline, in the same step: a task never leaves the system while worked.
Each claim gets a fresh token; acks and renewals must present it (fencing).

KEYS[1]  state hash    KEYS[2]  tasks hash    KEYS[3]  errors hash
KEYS[4]  dead zset     KEYS[5]  seq counter
then 4 KEYS per queue, in the worker's order: ready, delayed, inflight, wake
ARGV[1]  now_ms        ARGV[2]  lease_ms      ARGV[3]  max tasks to claim
ARGV[4]  worker id     ARGV[5]  max recoveries and promotions per queue
ARGV[6]  optional: '1' = now is the later of ARGV[1] and the server's clock
         (a claim pipelined behind a blocking wait runs long after it was sent)

Returns {next_wake_ms, damaged, id, queue_index, attempt, token, record, id, ...}
next_wake_ms is the earliest delayed run_at or lease deadline over the queues
(-1 if none); it is only computed when fewer than N tasks were claimed.
damaged is {id, reason, id, reason, ...}: the tasks this call dead-lettered
because their entries were damaged (the caller logs each once). Reasons:
'undecodable state', 'state missing', 'record missing' (also when nothing at
all is stored for the id), 'id not UTF-8' (the id bytes are not UTF-8: the
task is moved to the id 'damaged-id.<hex of the bytes>' and buried there, so
that every reader and the worker's reply can carry it).
]]
local now = tonumber(ARGV[1])
if ARGV[6] == '1' then
  local t = redis.call('TIME')
  local server_now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if server_now > now then now = server_now end
end
local lease = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local worker = ARGV[4]
local limit = tonumber(ARGV[5])
local nq = (#KEYS - 5) / 4
local backlog = false

local damaged = {}

--! include errors.lua

-- A state entry that does not decode (damage in Redis, not ours) would fail
-- the whole call, and Lua does not roll back what the call already did.
local function decode_state(raw)
  local ok, st = pcall(cjson.decode, raw)
  if ok and type(st) == 'table' and type(st.a) == 'number' and type(st.m) == 'number' then
    return st
  end
  return nil
end

-- Dead-letter a damaged task with the reason: it costs that task, never the call.
local function bury(id, why, detail)
  add_error(KEYS[3], id, {type = 'CorruptTask', at = now, message = why .. ': ' .. printable(string.sub(detail, 1, 500))})
  redis.call('HSET', KEYS[1], id, cjson.encode({s = 'dead', a = 0, m = 1, tf = now, why = why}))
  redis.call('ZADD', KEYS[4], now, id)
  damaged[#damaged + 1] = id
  damaged[#damaged + 1] = why
end

-- The state of an id taken off a list, or nil after burying the task when
-- its state is missing or does not decode.
local function usable_state(id, where)
  local raw = redis.call('HGET', KEYS[1], id)
  if not raw then
    if redis.call('HEXISTS', KEYS[2], id) == 1 then
      bury(id, 'state missing', 'the id was in ' .. where .. ' with a record but no state')
    else
      bury(id, 'record missing', 'state and record missing: the id was in ' .. where .. ' with nothing stored')
    end
    return nil
  end
  local st = decode_state(raw)
  if not st then bury(id, 'undecodable state', raw) end
  return st
end

-- Strict UTF-8, as Python decodes it (no overlong forms, no surrogates, at
-- most U+10FFFF). Called only for ids holding a byte >= 0x80.
local function utf8_valid(s)
  local i, n = 1, #s
  while i <= n do
    local c = string.byte(s, i)
    local len, lo, hi = 1, 0x80, 0xBF
    if c < 0x80 then len = 1
    elseif c >= 0xC2 and c <= 0xDF then len = 2
    elseif c == 0xE0 then len, lo = 3, 0xA0
    elseif c == 0xED then len, hi = 3, 0x9F
    elseif c >= 0xE1 and c <= 0xEF then len = 3
    elseif c == 0xF0 then len, lo = 4, 0x90
    elseif c == 0xF4 then len, hi = 4, 0x8F
    elseif c >= 0xF1 and c <= 0xF3 then len = 4
    else return false end
    for j = 1, len - 1 do
      local b = string.byte(s, i + j)
      if not b then return false end
      if j == 1 then
        if b < lo or b > hi then return false end
      elseif b < 0x80 or b > 0xBF then return false end
    end
    i = i + len
  end
  return true
end

-- Move a task whose id is not UTF-8 to a readable id and bury it there.
local function bury_bad_id(id, record)
  local hex = string.gsub(id, '.', function(c) return string.format('%02x', string.byte(c)) end)
  local new_id = 'damaged-id.' .. hex
  redis.call('HSET', KEYS[2], new_id, record)
  local errors = redis.call('HGET', KEYS[3], id)
  if errors then redis.call('HSET', KEYS[3], new_id, errors) end
  redis.call('HDEL', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('HDEL', KEYS[3], id)
  bury(new_id, 'id not UTF-8', 'the id bytes (hex ' .. hex .. ') are not UTF-8; the task was moved to this id')
end

for q = 0, nq - 1 do
  local ready, delayed, inflight = KEYS[6 + q * 4], KEYS[7 + q * 4], KEYS[8 + q * 4]
  local expired = redis.call('ZRANGEBYSCORE', inflight, '-inf', now, 'LIMIT', 0, limit)
  for _, id in ipairs(expired) do
    redis.call('ZREM', inflight, id)
    local st = usable_state(id, 'the in-flight set')
    if st then
      add_error(KEYS[3], id, {type = 'LeaseExpired', attempt = st.a, at = now, worker = st.w,
        message = 'lease expired while the task ran: the worker was killed, paused or cut off'})
      st.k = nil
      st.w = nil
      if st.a >= st.m then
        st.s = 'dead'
        st.tf = now
        st.why = 'attempts exhausted'
        redis.call('ZADD', KEYS[4], now, id)
      else
        st.s = 'queued'
        redis.call('RPUSH', ready, id)
      end
      redis.call('HSET', KEYS[1], id, cjson.encode(st))
    end
  end
  local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, limit)
  if #due > 0 then
    redis.call('ZREM', delayed, unpack(due))
    for _, id in ipairs(due) do
      local st = usable_state(id, 'the delayed set')
      if st then
        st.s = 'queued'
        redis.call('HSET', KEYS[1], id, cjson.encode(st))
        redis.call('LPUSH', ready, id)
      end
    end
    if #due == limit then backlog = true end
  end
end

local out = {-1, damaged}
local got = 0
local base = nil
for q = 0, nq - 1 do
  if got >= want then break end
  local ready, inflight = KEYS[6 + q * 4], KEYS[8 + q * 4]
  while got < want do
    local id = redis.call('RPOP', ready)
    if not id then break end
    local st = usable_state(id, 'the ready list')
    local record = st and redis.call('HGET', KEYS[2], id)
    if st and not record then
      bury(id, 'record missing', 'the id was in the ready list with a state but no record')
    elseif st and string.find(id, '[\128-\255]') and not utf8_valid(id) then
      bury_bad_id(id, record)
    elseif st then
      if not base then base = redis.call('INCR', KEYS[5]) end
      got = got + 1
      st.s = 'running'
      st.a = st.a + 1
      st.k = base .. '.' .. got
      st.w = worker
      st.ts = now
      redis.call('HSET', KEYS[1], id, cjson.encode(st))
      redis.call('ZADD', inflight, now + lease, id)
      out[#out + 1] = id
      out[#out + 1] = q
      out[#out + 1] = st.a
      out[#out + 1] = st.k
      out[#out + 1] = record
    end
  end
end

-- Wake one more idle worker for each queue that still has ready tasks.
for q = 0, nq - 1 do
  local ready, wake = KEYS[6 + q * 4], KEYS[9 + q * 4]
  if redis.call('LLEN', ready) > 0 and redis.call('LLEN', wake) == 0 then
    redis.call('LPUSH', wake, '1')
  end
end

if got < want then
  local next_wake = -1
  if backlog then next_wake = now end
  for q = 0, nq - 1 do
    for _, key in ipairs({KEYS[7 + q * 4], KEYS[8 + q * 4]}) do
      local head = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
      if head[2] then
        local t = tonumber(head[2])
        if next_wake < 0 or t < next_wake then next_wake = t end
      end
    end
  end
  out[1] = next_wake
end
return out
