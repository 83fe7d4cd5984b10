-- pool_define.lua — define a pool (a queue narrowed by a worker filter) with its members.
-- Pools are created lazily, the first time triage routes a case to a (queue, filter) pair;
-- membership is computed by Python from agent attributes and checked against the agents'
-- version ('aver', bumped by agent_update.lua) so a concurrent agent update cannot be missed;
-- defining bumps the pools' version ('pver'), which agent_update.lua checks. Conditions on the agents' live load
-- are not part of membership: the matching reads them from the pool id (see load_conds in
-- _lib.lua); the 'load' field keeps a copy for people and tools.
-- KEYS[1] workspace prefix
-- ARGV    now, pool id, queue id, canonical filter (without live-load terms), agents' version
--         read, members JSON [[agent id, order value], ...], order_by JSON, live-load
--         conditions ('' = none; the part of the pool id after '#')
-- Returns {ok=true, created} ({ok=true, created=false, gone=true} for a queue the workspace
-- no longer declares: a node that has not yet seen the change does not bring its pool back,
-- and the step is passed over) or {ok=false, retry=true}.
local p = ARGV[2]
if redis.call('SISMEMBER', k_pools(), p) == 1 then
  return result({ok = true, created = false})
end
if redis.call('SISMEMBER', k_queues(), ARGV[3]) == 0 then
  return result({ok = true, created = false, gone = true})
end
if (hget(k_cfg(), 'aver') or '0') ~= ARGV[5] then
  return result({ok = false, retry = true})
end
redis.call('HINCRBY', k_cfg(), 'pver', 1)
redis.call('SADD', k_pools(), p)
redis.call('HSET', k_pool(p), 'queue', ARGV[3], 'filter', ARGV[4], 'kind', 'queue',
  'order', ARGV[7], 'load', ARGV[8] or '')
for _, m in ipairs(cjson.decode(ARGV[6])) do
  redis.call('HSET', k_pool_agents(p), m[1], m[2])
  redis.call('HSET', k_agent_pools(m[1]), p, m[2])
  refresh_agent(m[1])
end
log('pool.defined', {'pool', p, 'queue', ARGV[3]})
return result({ok = true, created = true})
