-- case_wrapup.lua — the agent ends the conversation and starts after-contact work: the case
-- becomes "wrapping"; the agent keeps the capacity until case_complete.
-- KEYS[1] workspace prefix
-- ARGV    now, agent id, case id
-- Returns {ok, duplicate} or {ok=false, error=case.unknown|case.<state>}.
local a, c = ARGV[2], ARGV[3]
local ck = k_case(c)
local cs = redis.call('HMGET', ck, 'st', 'agent', 'ch')
if not cs[1] or cs[2] ~= a then return result({ok = false, error = 'case.unknown'}) end
if cs[1] == 'wrapping' then return result({ok = true, duplicate = true}) end
if cs[1] ~= 'assigned' then return result({ok = false, error = 'case.' .. cs[1]}) end
redis.call('HSET', ck, 'st', 'wrapping', 'wrapping_since', NOW_S, 'updated', NOW_S)
chat_event(c, cs[3], 'closed', a)
log('case.wrapping', {'case', c, 'agent', a})
return result({ok = true, duplicate = false})
