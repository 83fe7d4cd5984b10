-- agent_presence.lua — an agent's console connected or disconnected on a node, or a dead
-- node's connections are reaped. Connections are counted per node, so a node that dies
-- (kill -9) without saying goodbye can be reaped by any other node. When the last connection
-- is gone a grace timer is armed (timers_run "g|"); reconnecting on any node within the grace
-- period cancels it, so the agent keeps their cases and pending offers.
-- KEYS[1] workspace prefix
-- A node that was taken for dead while alive (it missed heartbeats) and reaped says again what
-- it holds ('restore': its count of the agent's consoles), as it finds out at its next beat.
-- ARGV    now, agent id, 'connect'|'disconnect'|'reap'|'restore', grace ms, token, node id,
--         ('restore') the node's consoles of the agent
-- Returns {ok, status, connections}.
local a, action, node = ARGV[2], ARGV[3], ARGV[6]
local ak = k_agent(a)
if redis.call('EXISTS', ak) == 0 then return result({ok = false, error = 'agent.unknown'}) end
local conns = k_agent_conns(a)
local node_agents = k_node_agents(node)
if action == 'connect' then
  local g = hget(ak, 'grace')
  if g and g ~= '' then redis.call('ZREM', k_timers(), 'g|' .. a .. '|' .. g) end
  redis.call('HSET', ak, 'grace', '')
  redis.call('HINCRBY', conns, node, 1)
  redis.call('SADD', node_agents, a)
elseif action == 'restore' then
  local g = hget(ak, 'grace')
  if g and g ~= '' then redis.call('ZREM', k_timers(), 'g|' .. a .. '|' .. g) end
  redis.call('HSET', ak, 'grace', '')
  redis.call('HSET', conns, node, tonumber(ARGV[7]))
  redis.call('SADD', node_agents, a)
elseif action == 'disconnect' then
  if redis.call('HINCRBY', conns, node, -1) <= 0 then
    redis.call('HDEL', conns, node)
    redis.call('SREM', node_agents, a)
  end
else
  redis.call('HDEL', conns, node)
  redis.call('SREM', node_agents, a)
end
local total, nodes = 0, {}
local per_node = redis.call('HGETALL', conns)
for i = 1, #per_node, 2 do
  nodes[#nodes + 1] = per_node[i]
  total = total + (tonumber(per_node[i + 1]) or 0)
end
-- the agent's "nodes" field: the nodes holding its consoles, read by make_offer with the load
redis.call('HSET', ak, 'nodes', table.concat(nodes, ','))
if action ~= 'connect' and action ~= 'restore' and total <= 0 and (hget(ak, 'grace') or '') == '' then
  redis.call('HSET', ak, 'grace', ARGV[5])
  redis.call('ZADD', k_timers(), NOW + tonumber(ARGV[4]), 'g|' .. a .. '|' .. ARGV[5])
end
return result({ok = true, status = hget(ak, 'st'), connections = total})
