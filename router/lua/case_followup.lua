-- case_followup.lua — an agent schedules a follow-up reminder on a case they handle or handled.
-- The customer's history says so (a note entry, kind 'followup'): whoever has the case next
-- knows a follow-up is set, when and by whom.
-- KEYS[1] workspace prefix
-- ARGV    now, agent id, case id, due (ms since epoch), note, timeline entry JSON ('' = none)
-- Returns {ok, id, due, entry} or {ok=false, error=case.unknown}.
local a, c = ARGV[2], ARGV[3]
local cs = redis.call('HMGET', k_case(c), 'agent', 'last_agent', 'cust')
if cs[1] ~= a and cs[2] ~= a then return result({ok = false, error = 'case.unknown'}) end
local n = redis.call('HINCRBY', k_case(c), 'followups', 1)
redis.call('HSET', k_case(c), 'followup:' .. n, ARGV[5])
redis.call('ZADD', k_timers(), tonumber(ARGV[4]), 'f|' .. c .. '|' .. a .. '|' .. n)
-- the agent's list of what they set (hello's followups), until it falls due or they cancel it
redis.call('ZADD', k_agent_followups(a), tonumber(ARGV[4]), c .. '|' .. n)
log('case.followup', {'case', c, 'agent', a, 'due', ARGV[4]})
local entry = nil
if (ARGV[6] or '') ~= '' and cs[3] then
  redis.call('RPUSH', k_timeline(cs[3]), ARGV[6])
  entry = cjson.decode(ARGV[6])
end
return result({ok = true, id = c .. '|' .. n, due = tonumber(ARGV[4]), entry = entry})
