-- workspace_declare.lua — store a workspace's declaration and upsert its queues, unless the
-- declaration changed since the caller read it: the admin API's edits are read-change-write,
-- and two nodes editing at once would otherwise lose one edit (the caller re-reads and
-- retries). The agents and pool memberships are then brought up to date by the caller, each
-- under its own version check (agent_update.lua, pool_define.lua).
-- KEYS[1] workspace prefix
-- ARGV    now, declaration version read ('' = whatever it is), declaration JSON (stored as
--         given: passwords already taken out), queues JSON [[id, name, target, order, sl], ...],
--         the workflow's default queue ('' = none)
-- A queue the declaration drops leaves the declared set, and its pools are retired: a step
-- into one is passed over (enter_step), and no node defines them again (pool_define.lua). The
-- caller refused the drop while cases waited in the queue; one that came in since, triaged
-- by a node that had not yet seen the change, moves on to its next step here. A case whose
-- plan runs out past such a step waits in the workflow's default queue ('dq': enter_step).
-- Returns {ok=true, version, offers} or {ok=false, error='workspace.changed', version}.
local cur = hget(k_cfg(), 'declver') or '0'
if ARGV[2] ~= '' and ARGV[2] ~= cur then
  return result({ok = false, error = 'workspace.changed', version = cur})
end
redis.call('HSET', k_cfg(), 'decl', ARGV[3], 'dq', ARGV[5] or '')
local version = redis.call('HINCRBY', k_cfg(), 'declver', 1)
local declared = {}
for _, q in ipairs(cjson.decode(ARGV[4])) do
  declared[q[1]] = true
  redis.call('SADD', k_queues(), q[1])
  redis.call('HSET', k_queue(q[1]), 'name', q[2], 'target', q[3], 'order', q[4], 'sl', q[5])
end
local dropped = {}
for _, q in ipairs(redis.call('SMEMBERS', k_queues())) do
  if not declared[q] then
    dropped[q] = true
    redis.call('SREM', k_queues(), q)
  end
end
local offers = {}
if next(dropped) ~= nil then
  for _, p in ipairs(redis.call('SMEMBERS', k_pools())) do
    if dropped[hget(k_pool(p), 'queue') or ''] then
      redis.call('SREM', k_pools(), p)
      log('pool.retired', {'pool', p})
    end
  end
  -- agents' memberships are computed from the defined pools: the caller computes them again
  redis.call('HINCRBY', k_cfg(), 'pver', 1)
  for q in pairs(dropped) do
    for _, c in ipairs(redis.call('ZRANGE', k_queue_wait(q), 0, -1)) do
      local cs = redis.call('HMGET', k_case(c), 'st', 'step')
      if cs[1] == 'queued' then
        enter_step(c, (tonumber(cs[2]) or 1) + 1, offers, false, nil, true)
      end
    end
  end
end
return result({ok = true, version = num_s(version), offers = offers})
