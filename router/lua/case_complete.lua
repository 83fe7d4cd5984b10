-- case_complete.lua — the agent finishes a case (from assigned or wrapping) with a disposition:
-- the capacity is freed and the agent immediately pulls its next case.
-- KEYS[1] workspace prefix
-- ARGV    now, agent id, case id, disposition code, timeline entry JSON ('' = none)
-- Returns {ok, duplicate, offers} or {ok=false, error=...}.
local a, c = ARGV[2], ARGV[3]
local ck = k_case(c)
local cs = redis.call('HMGET', ck, 'st', 'agent', 'ch', 'cust')
if not cs[1] or cs[2] ~= a then return result({ok = false, error = 'case.unknown'}) end
if cs[1] == 'completed' then return result({ok = true, duplicate = true, offers = {}}) end
if cs[1] ~= 'assigned' and cs[1] ~= 'wrapping' then
  return result({ok = false, error = 'case.' .. cs[1]})
end
redis.call('HSET', ck, 'st', 'completed', 'disposition', ARGV[4], 'closed', NOW_S, 'updated', NOW_S)
redis.call('SREM', k_agent_cases(a), c)
if cs[1] == 'assigned' then chat_event(c, cs[3], 'closed', a) end  -- wrap-up told it already
if ARGV[5] ~= '' then redis.call('RPUSH', k_timeline(cs[4]), ARGV[5]) end
local _, known = move_load(a, cs[3], -1)
log('case.completed', {'case', c, 'agent', a, 'disposition', ARGV[4]})
local offers = {}
pull(a, offers, cs[3], nil, known)
return result({ok = true, duplicate = false, offers = offers})
