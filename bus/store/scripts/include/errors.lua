--[[ include/errors.lua: appending to a task's error list, whatever is stored.

Included by claim.lua and settle.lua.
]]

-- Damaged bytes copied into an error message must not make the error list
-- invalid JSON for its readers (cjson copies bytes as they are): anything but
-- printable ASCII is shown as \xNN.
local function printable(s)
  return (string.gsub(s, '[^ -~]', function(c) return string.format('\\x%02x', string.byte(c)) end))
end

-- Append err (a table) to the JSON list in field id of the errors hash. A
-- damaged list must not fail the call: a Lua error here would leave what the
-- call did before it applied. It is kept as one entry, its bytes printable,
-- so nothing of it is thrown away.
local function add_error(errors_key, id, err)
  local raw = redis.call('HGET', errors_key, id)
  local ok, list = pcall(cjson.decode, raw or '[]')
  if not ok or type(list) ~= 'table' then
    list = {{type = 'CorruptErrorList', message = printable(string.sub(raw, 1, 2000))}}
  end
  list[#list + 1] = err
  redis.call('HSET', errors_key, id, cjson.encode(list))
end
