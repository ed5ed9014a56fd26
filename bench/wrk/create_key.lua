-- POST /auth/create-key, each with an email no run has used.
local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)")
dofile(here .. "report.lua")

local counter = 0
local run = ""

init = function(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16))
  run = string.format("%d%06d", os.time(), math.random(999999))
end

request = function()
  counter = counter + 1
  local body = string.format(
    '{"user_name": "Load %d", "user_email": "load-%s-%d@bench.example", "org_name": "Bench"}',
    counter, run, counter)
  return wrk.format("POST", "/auth/create-key", { ["Content-Type"] = "application/json" }, body)
end
