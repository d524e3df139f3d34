--[[ include/state.lua: reading a task's state entry without trusting it.

Included by purge.lua, release.lua, renew.lua, replay.lua and settle.lua.
]]

-- The state entry (JSON in the state hash) as a table, or nil when it is
-- missing or damaged (not ours): damage costs that task, never the batch.
local function state_or_nil(raw)
  local ok, st = pcall(cjson.decode, raw or 'null')
  if ok and type(st) == 'table' then return st end
  return nil
end
