-- workspace_declare.lua — store a workspace's declaration and upsert its queues, unless the
-- declaration changed since the caller read it: the admin API's edits are read-change-write,
-- and two nodes editing at once would otherwise lose one edit (the caller re-reads and
-- retries). The agents and pool memberships are then brought up to date by the caller, each
-- under its own version check (agent_update.lua, pool_define.lua).
-- KEYS[1] workspace prefix
-- ARGV    now, declaration version read ('' = whatever it is), declaration JSON (stored as
--         given: passwords already taken out), queues JSON [[id, name, target, order, sl], ...]
-- Returns {ok=true, version} or {ok=false, error='workspace.changed', version}.
local cur = hget(k_cfg(), 'declver') or '0'
if ARGV[2] ~= '' and ARGV[2] ~= cur then
  return result({ok = false, error = 'workspace.changed', version = cur})
end
redis.call('HSET', k_cfg(), 'decl', ARGV[3])
local version = redis.call('HINCRBY', k_cfg(), 'declver', 1)
for _, q in ipairs(cjson.decode(ARGV[4])) do
  redis.call('SADD', k_queues(), q[1])
  redis.call('HSET', k_queue(q[1]), 'name', q[2], 'target', q[3], 'order', q[4], 'sl', q[5])
end
return result({ok = true, version = num_s(version)})
