-- case_followup.lua — an agent schedules a follow-up reminder on a case they handle or handled.
-- KEYS[1] workspace prefix
-- ARGV    now, agent id, case id, due (ms since epoch), note
-- Returns {ok, due} or {ok=false, error=case.unknown}.
local a, c = ARGV[2], ARGV[3]
local cs = redis.call('HMGET', k_case(c), 'agent', 'last_agent')
if cs[1] ~= a and cs[2] ~= a then return result({ok = false, error = 'case.unknown'}) end
local n = redis.call('HINCRBY', k_case(c), 'followups', 1)
redis.call('HSET', k_case(c), 'followup:' .. n, ARGV[5])
redis.call('ZADD', k_timers(), tonumber(ARGV[4]), 'f|' .. c .. '|' .. a .. '|' .. n)
log('case.followup', {'case', c, 'agent', a, 'due', ARGV[4]})
return result({ok = true, due = tonumber(ARGV[4])})
