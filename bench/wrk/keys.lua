-- GET /auth/check-key with the keys of $KEYS_FILE, in order, from a random start per thread.
local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)")
dofile(here .. "report.lua")

local keys = {}
local position = 0

init = function(args)
  for line in io.lines(os.getenv("KEYS_FILE")) do
    keys[#keys + 1] = line
  end
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  position = math.random(#keys)
end

request = function()
  position = position % #keys + 1
  return wrk.format("GET", nil, { ["x-api-key"] = keys[position] })
end
