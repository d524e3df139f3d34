--[[ routed.lua: mark events as fully routed, if routed by the current registry.

A publisher routes with its cached copy of the subscription registry. If the
registry changed since, the events stay pending and are routed again with the
new one (enqueue is idempotent, so apps that already have the task are not
given a second one).

KEYS[1]  pending zset       KEYS[2]  registry version
ARGV[1]  the registry version the events were routed with
then the event keys

Returns the current registry version; the events were marked routed iff it
equals ARGV[1].
]]
local version = redis.call('GET', KEYS[2]) or '0'
if version == ARGV[1] and #ARGV > 1 then
  redis.call('ZREM', KEYS[1], unpack(ARGV, 2))
end
return version
