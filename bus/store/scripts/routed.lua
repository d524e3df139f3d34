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
KEYS[3]  confirmed hash     (pending event key -> apps whose tasks exist)
KEYS[4..] the state hash of each app the events were routed to
ARGV[1]  the registry version the events were routed with
ARGV[2]  1 to mark events routed, 0 to only check (a damaged registry entry
         holds every event pending) and record what exists
ARGV[3]  the number of events E, then ARGV[4 .. E+3] their keys
then, for each app in KEYS order: its name, its number of tasks n, then n
pairs: the index of the task's event (1 .. E), the task id

For an event that stays pending, the apps all of whose tasks of it exist are
added to its entry in KEYS[3]: a later re-route (the sweep, a retry with the
same id) skips them, so an app whose task already ran and was pruned after
its retention never gets a second one. A routed event's entry is deleted.

Returns {current registry version, events left pending}. Nothing is checked
or marked unless the version equals ARGV[1]. The tasks of one app are checked
with one HMGET, not one call per task.
]]
local version = redis.call('GET', KEYS[2]) or '0'
if version ~= ARGV[1] then return {version, 0} end
local mark = ARGV[2] == '1'
local events = tonumber(ARGV[3])
local missing = {}  -- event index (as in ARGV, a string) -> true
local groups = {}   -- per app: {name, ARGV index of its n, n, found[j]}
local i = events + 4
for k = 4, #KEYS do
  local n = tonumber(ARGV[i + 1])
  local ids = {}
  for j = 1, n do ids[j] = ARGV[i + 1 + 2 * j] end
  local ok = {}
  -- unpack is bounded by Lua's C stack: ask in chunks.
  for c = 1, n, 4000 do
    local last = math.min(c + 3999, n)
    local found = redis.pcall('HMGET', KEYS[k], unpack(ids, c, last))
    local damaged = type(found) == 'table' and found.err ~= nil
    for j = c, last do
      if damaged or not found[j - c + 1] then
        missing[ARGV[i + 2 * j]] = true
      else
        ok[j] = true
      end
    end
  end
  groups[#groups + 1] = {ARGV[i], i, n, ok}
  i = i + 2 + 2 * n
end
local done = {}
local stays = {}  -- event index -> key, for the events left pending
local left = 0
for j = 1, events do
  local e = tostring(j)
  if mark and not missing[e] then
    done[#done + 1] = ARGV[j + 3]
  else
    stays[e] = ARGV[j + 3]
    left = left + 1
  end
end
if left > 0 then
  -- Per event left pending: the apps all of whose tasks of it exist.
  local whole = {}  -- event index -> {app -> true | false}
  for _, g in ipairs(groups) do
    local app, at, n, ok = g[1], g[2], g[3], g[4]
    for j = 1, n do
      local e = ARGV[at + 2 * j]
      if stays[e] then
        whole[e] = whole[e] or {}
        whole[e][app] = (whole[e][app] ~= false) and ok[j] == true
      end
    end
  end
  for e, key in pairs(stays) do
    local seen, list = {}, {}
    local old = redis.call('HGET', KEYS[3], key)
    if old then
      for app in string.gmatch(old, '%S+') do
        if not seen[app] then seen[app] = true; list[#list + 1] = app end
      end
    end
    for app, all in pairs(whole[e] or {}) do
      if all and not seen[app] then seen[app] = true; list[#list + 1] = app end
    end
    if #list > 0 then redis.call('HSET', KEYS[3], key, table.concat(list, ' ')) end
  end
end
for k = 1, #done, 1000 do
  local part = {unpack(done, k, math.min(k + 999, #done))}
  redis.call('ZREM', KEYS[1], unpack(part))
  redis.call('HDEL', KEYS[3], unpack(part))
end
return {version, left}
