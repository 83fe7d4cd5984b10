-- agent_update.lua — create or update an agent: name, channels and capacities, attributes, and
-- the pools (queue x filter) the agent belongs to, computed by Python from the attributes.
-- KEYS[1] workspace prefix
-- ARGV    now, agent id, name, channels "chat,email,voice", capacities JSON {ch: n},
--         attributes JSON, memberships JSON [[pool id, order value], ...], the pools' version
--         ('pver') read when the memberships were computed ('' = don't check), '1' = create
--         only (an agent of this id exists: refused, nothing changed)
-- Returns {ok, created, offers} or {ok=false, retry=true} when a pool was defined meanwhile
-- (the caller recomputes memberships and calls again), {ok=false, error='agent.exists'}. Bumps the agents' version ('aver'),
-- which pool_define.lua checks: a pool defined from agents read before this update retries.
-- Agent updates do not conflict with each other: each agent's memberships are its own.
local a = ARGV[2]
if ARGV[9] == '1' and redis.call('EXISTS', k_agent(a)) == 1 then
  return result({ok = false, error = 'agent.exists'})
end
if ARGV[8] ~= '' and (hget(k_cfg(), 'pver') or '0') ~= ARGV[8] then
  return result({ok = false, retry = true})
end
redis.call('HINCRBY', k_cfg(), 'aver', 1)
local ak = k_agent(a)
local created = redis.call('EXISTS', ak) == 0
remove_agent_everywhere(a)
if created then
  -- sessions count on from a removed agent of the same id (agent_remove.lua): their tokens
  -- carry the old versions
  local sv = hget(k_cfg(), 'gone:' .. a) or '0'
  redis.call('HDEL', k_cfg(), 'gone:' .. a)
  redis.call('HSET', ak, 'id', a, 'st', 'offline', 'r', '0', 'idle', NOW_S, 'missed', 0, 'sv', sv)
end
local caps = cjson.decode(ARGV[5])
for _, ch in ipairs(split(hget(ak, 'chs'), ',')) do
  if caps[ch] == nil then redis.call('HDEL', ak, 'cap:' .. ch) end
end
redis.call('HSET', ak, 'name', ARGV[3], 'chs', ARGV[4], 'attrs', ARGV[6])
for ch, n in pairs(caps) do
  redis.call('HSET', ak, 'cap:' .. ch, n)
  redis.call('HSETNX', ak, 'load:' .. ch, 0)
end
redis.call('SADD', k_agents(), a)
local want = {}
for _, m in ipairs(cjson.decode(ARGV[7])) do want[m[1]] = m[2] end
for _, p in ipairs(redis.call('HKEYS', k_agent_pools(a))) do
  if want[p] == nil and string.sub(p, 1, 2) ~= 'a~' then
    redis.call('HDEL', k_agent_pools(a), p)
    redis.call('HDEL', k_pool_agents(p), a)
  end
end
for p, ord in pairs(want) do
  redis.call('HSET', k_agent_pools(a), p, ord)
  redis.call('HSET', k_pool_agents(p), a, ord)
end
refresh_agent(a)
local offers = {}
pull(a, offers)
log('agent.updated', {'agent', a})
return result({ok = true, created = created, offers = offers})
