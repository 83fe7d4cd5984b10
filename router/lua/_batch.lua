-- _batch.lua — runs several transitions, in order, in one call; appended last.
--
-- router/store.py loads one script: "local ARGV = ARGV", then _lib.lua, then every transition
-- script's body wrapped as a function in T (T['offer_accept'] = function() ... end), then this.
-- Concurrent calls for one workspace thus cost one EVALSHA, and the helpers above are defined
-- once per batch rather than once per transition (in Lua 5.1 each definition is a new closure).
-- KEYS[1] workspace prefix
-- ARGV    groups of: transition name, argument count n, then its n arguments (now first)
-- Returns one string per transition, in order: its JSON result, or "!" and the error message
-- when it raised one (the others still run; like a lone script, it keeps the writes it made,
-- the new case it held included: see case_hold in _lib.lua).
-- Lua's collector starts a cycle when its heap has doubled (pause 200): every cycle marks the
-- helpers and tables above again. At 400 it runs half as often, for a few hundred KB more
-- heap: -1.6 % of Redis's instructions per routed case (python -m bench cost).
collectgarbage('setpause', 400)
local batch = ARGV
local out = {}
local i = 1
while i <= #batch do
  local name, n = batch[i], tonumber(batch[i + 1])
  ARGV = {unpack(batch, i + 2, i + 1 + n)}
  NOW_S = ARGV[1]
  NOW = tonumber(NOW_S)
  NEW_CASE, NEW_CUSTOMER = nil, nil
  local fn = T[name]
  local ok, res
  if fn == nil then
    ok, res = false, 'unknown transition ' .. tostring(name)
  else
    ok, res = pcall(fn)
    -- a new case still held (a path that returned early, or an error) is written as it is
    local fok, ferr = pcall(case_flush)
    if ok and not fok then ok, res = false, ferr end
  end
  if ok then
    out[#out + 1] = res
  elseif type(res) == 'table' then
    out[#out + 1] = '!' .. tostring(res.err or res.message or 'error')
  else
    out[#out + 1] = '!' .. tostring(res)
  end
  i = i + 2 + n
end
return out
