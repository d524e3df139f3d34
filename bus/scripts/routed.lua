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
then per event: its key, its number of tasks n, then n pairs:
the index in KEYS of the task's state hash, the task id

Returns {current registry version, events left pending for a missing task}.
Nothing is marked routed unless the version equals ARGV[1].
]]
local version = redis.call('GET', KEYS[2]) or '0'
if version ~= ARGV[1] then return {version, 0} end
local done = {}
local missing = 0
local i = 2
while i <= #ARGV do
  local key, n = ARGV[i], tonumber(ARGV[i + 1])
  local whole = true
  for j = i + 2, i + 2 * n, 2 do
    local found = redis.pcall('HEXISTS', KEYS[tonumber(ARGV[j])], ARGV[j + 1])
    if found ~= 1 then whole = false end
  end
  if whole then done[#done + 1] = key else missing = missing + 1 end
  i = i + 2 + 2 * n
end
-- unpack is bounded by Lua's C stack: remove in chunks.
for k = 1, #done, 1000 do
  redis.call('ZREM', KEYS[1], unpack(done, k, math.min(k + 999, #done)))
end
return {version, missing}
