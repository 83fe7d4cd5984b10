-- agent_status.lua — an agent changes status (available / away / offline / custom).
-- Becoming routable pulls the best waiting cases across all the agent's pools up to capacity;
-- any status that is not routable (away, offline, a custom break) rescinds the agent's pending
-- offers: their cases go back with their age to the next agent at once, instead of ringing
-- someone who said they are not taking work until the deadline (a caller waits through it).
-- KEYS[1] workspace prefix
-- ARGV    now, agent id, status, routable '1'|'0', '1' when someone else (a supervisor) sets
--         it: a routable status needs the agent signed in (a console open, or its reconnect
--         grace), or offers would ring nobody
-- Returns {ok, status, offers, push} (push: an offer.rescinded frame for each offer it ended)
-- or {ok=false, error=code}.
local a = ARGV[2]
local ak = k_agent(a)
if redis.call('EXISTS', ak) == 0 then return result({ok = false, error = 'agent.unknown'}) end
if ARGV[5] == '1' and ARGV[4] == '1' and redis.call('HLEN', k_agent_conns(a)) == 0
    and (hget(ak, 'grace') or '') == '' then
  return result({ok = false, error = 'agent.signed_out'})
end
local was = hget(ak, 'r')
redis.call('HSET', ak, 'st', ARGV[3], 'r', ARGV[4])
if ARGV[4] == '1' then
  redis.call('HSET', ak, 'missed', 0)
  if was ~= '1' then redis.call('HSET', ak, 'idle', NOW_S) end
end
local offers = {}
local push = {}
if ARGV[4] ~= '1' then
  for _, frame in ipairs(rescind_all(a, offers)) do push[#push + 1] = {agent = a, frame = frame} end
end
refresh_agent(a)
log('agent.status', {'agent', a, 'status', ARGV[3]})
if ARGV[4] == '1' then pull(a, offers) end
return result({ok = true, status = ARGV[3], offers = offers, push = push})
