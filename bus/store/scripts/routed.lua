--[[ routed.lua: mark events routed once every task of theirs exists.

A publisher routes with its cached copy of the subscription registry. If the
registry changed since, the events stay pending and are routed again with the
new one (enqueue is idempotent, so apps that already have the task are not
given a second one).

It runs in the same pipeline as the enqueue calls, after them, and never
trusts that they worked: an event leaves pending only if the state entry of
each of its tasks exists (enqueue.lua writes a task whole or not at all). An
enqueue that failed (a damaged key, NOPERM, OOM) leaves its events pending for
the sweep, which delivers them once the cause is fixed.

On a Redis Cluster the state hashes live in other slots than KEYS[1]; there
this check must become a second round trip after the enqueue replies.

KEYS[1]  pending zset       KEYS[2]  registry version
KEYS[3..] the state hash of each app the events were routed to
ARGV[1]  the registry version the events were routed with
ARGV[2]  the number of events E, then ARGV[3 .. E+2] their keys
then, for each app in KEYS order: its number of tasks n, then n pairs: the
index of the task's event (1 .. E), the task id

Returns {current registry version, events left pending for a missing task}.
Nothing is marked routed unless the version equals ARGV[1]. The tasks of one
app are checked with one HMGET, not one call per task.
]]
local version = redis.call('GET', KEYS[2]) or '0'
if version ~= ARGV[1] then return {version, 0} end
local events = tonumber(ARGV[2])
local missing = {}  -- event index (as in ARGV, a string) -> true
local i = events + 3
for k = 3, #KEYS do
  local n = tonumber(ARGV[i])
  local ids = {}
  for j = 1, n do ids[j] = ARGV[i + 2 * j] end
  -- unpack is bounded by Lua's C stack: ask in chunks.
  for c = 1, n, 4000 do
    local last = math.min(c + 3999, n)
    local found = redis.pcall('HMGET', KEYS[k], unpack(ids, c, last))
    local damaged = type(found) == 'table' and found.err ~= nil
    for j = c, last do
      if damaged or not found[j - c + 1] then missing[ARGV[i + 2 * j - 1]] = true end
    end
  end
  i = i + 1 + 2 * n
end
local done = {}
for j = 1, events do
  if not missing[tostring(j)] then done[#done + 1] = ARGV[j + 2] end
end
for k = 1, #done, 1000 do
  redis.call('ZREM', KEYS[1], unpack(done, k, math.min(k + 999, #done)))
end
return {version, events - #done}
