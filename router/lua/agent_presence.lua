-- agent_presence.lua — an agent's console connected or disconnected. A disconnect arms a grace
-- timer (timers_run "g|"); reconnecting on any node within the grace period cancels it, so the
-- agent keeps their cases and pending offers.
-- KEYS[1] workspace prefix
-- ARGV    now, agent id, 'connect'|'disconnect', grace ms, token (for disconnect)
-- Returns {ok, status}.
local a = ARGV[2]
local ak = k_agent(a)
if redis.call('EXISTS', ak) == 0 then return result({ok = false, error = 'agent.unknown'}) end
if ARGV[3] == 'connect' then
  local g = hget(ak, 'grace')
  if g and g ~= '' then redis.call('ZREM', k_timers(), 'g|' .. a .. '|' .. g) end
  redis.call('HSET', ak, 'grace', '')
  redis.call('HINCRBY', ak, 'conns', 1)
else
  local n = redis.call('HINCRBY', ak, 'conns', -1)
  if n <= 0 then
    redis.call('HSET', ak, 'conns', 0, 'grace', ARGV[5])
    redis.call('ZADD', k_timers(), NOW + tonumber(ARGV[4]), 'g|' .. a .. '|' .. ARGV[5])
  end
end
return result({ok = true, status = hget(ak, 'st')})
