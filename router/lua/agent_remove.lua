-- agent_remove.lua — remove an agent from the workspace (an admin's DELETE /api/agents/{id}).
-- Refused while they hold cases (assigned or wrapping up): those are moved first, so no case is
-- left with an agent who no longer exists. Otherwise, in one atomic step: the agent stops being
-- routable, their pending offers go on to the next agents (offer.rescinded, reason
-- 'unavailable'), cases waiting for them by name (a transfer to them, a reopened case waiting
-- for its last agent) move on to their next step at once, and the agent leaves every pool.
-- Their record, connections, reminders, reconnect grace and one-agent pool are deleted; the
-- follow-up and refusal timers naming them lapse when due (timers_run checks that the agent
-- exists). Bumps the agents' version ('aver'): a pool defined from agents read before retries.
-- KEYS[1] workspace prefix
-- ARGV    now, agent id
-- Returns {ok, offers, push, nodes} (nodes: where their consoles were) or {ok=false, error,
-- cases} ('agent.unknown'; 'agent.busy' with the ids of the cases they hold).
local a = ARGV[2]
local ak = k_agent(a)
if redis.call('EXISTS', ak) == 0 then return result({ok = false, error = 'agent.unknown'}) end
local held = redis.call('SMEMBERS', k_agent_cases(a))
if #held > 0 then
  table.sort(held)
  return result({ok = false, error = 'agent.busy', cases = held})
end
redis.call('HINCRBY', k_cfg(), 'aver', 1)
local grace = hget(ak, 'grace')
if grace and grace ~= '' then redis.call('ZREM', k_timers(), 'g|' .. a .. '|' .. grace) end
redis.call('HSET', ak, 'st', 'offline', 'r', '0')
-- out of every available set first, so no case their rescinded offers return goes back to them
remove_agent_everywhere(a)
local offers, push = {}, {}
for _, frame in ipairs(rescind_all(a, offers)) do push[#push + 1] = {agent = a, frame = frame} end
local own = 'a~' .. a
for _, p in ipairs(redis.call('HKEYS', k_agent_pools(a))) do
  redis.call('HDEL', k_pool_agents(p), a)
end
-- their session version lives on in the workspace's settings: a new agent of the same id starts
-- past it (agent_update.lua), so the removed one's tokens never work for them
redis.call('HSET', k_cfg(), 'gone:' .. a, (tonumber(hget(ak, 'sv')) or 0) + 1)
redis.call('DEL', ak)
-- (a case waiting for them by name went on to its next step with rescind_all above;
-- taking_cases() no longer finds them, so a later step naming them is passed over too)
for _, ch in ipairs({'chat', 'email', 'voice'}) do
  redis.call('DEL', k_pool_av(own, ch), k_pool_wait(own, ch))
end
redis.call('SREM', k_pools(), own)
redis.call('DEL', k_pool(own), k_pool_agents(own))
local nodes = redis.call('HKEYS', k_agent_conns(a))
for _, n in ipairs(nodes) do redis.call('SREM', k_node_agents(n), a) end
redis.call('DEL', k_agent_pools(a), k_agent_conns(a), k_agent_offers(a), k_agent_reminders(a),
  k_agent_cases(a), k_agent_followups(a))
redis.call('SREM', k_agents(), a)
log('agent.removed', {'agent', a})
return result({ok = true, offers = offers, push = push, nodes = nodes})
