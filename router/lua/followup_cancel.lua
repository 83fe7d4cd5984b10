-- followup_cancel.lua — an agent cancels a follow-up they set that is not yet due: it will not
-- remind them, and the case's history says so (a note entry, kind 'followup.cancelled'), for
-- whoever read that one was set.
-- KEYS[1] workspace prefix
-- ARGV    now, agent id, case id, follow-up number, timeline entry JSON
-- Returns {ok, entry} or {ok=false, error=followup.unknown} (not theirs, fallen due, cancelled).
local a, c, n = ARGV[2], ARGV[3], ARGV[4]
local timer = 'f|' .. c .. '|' .. a .. '|' .. n
local due = redis.call('ZSCORE', k_timers(), timer)
if not due then return result({ok = false, error = 'followup.unknown'}) end
redis.call('ZREM', k_timers(), timer)
redis.call('ZREM', k_agent_followups(a), c .. '|' .. n)
redis.call('HDEL', k_case(c), 'followup:' .. n)
local cust = hget(k_case(c), 'cust')
local entry = nil
if cust then
  entry = cjson.decode(ARGV[5])
  entry.due = tonumber(due)  -- which one it was: a case may have several set
  redis.call('RPUSH', k_timeline(cust), cjson.encode(entry))
end
log('case.followup_cancelled', {'case', c, 'agent', a})
return result({ok = true, entry = entry})
