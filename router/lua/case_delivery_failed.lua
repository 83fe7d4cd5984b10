-- case_delivery_failed.lua — a reply its adapter gave up on (the mail server refused the
-- address for good, or there was no address to send it to): its entry goes on the timeline of
-- the case's customer as it is now (a merge cannot move it in between), once per delivery, and
-- in the log. It only appends to a case and never routes; router/switch.py delivery_failed
-- tells the agents, from what this returns.
-- KEYS[1] workspace prefix
-- ARGV    1 now  2 case id  3 timeline entry JSON  4 dedupe id ('' = none)  5 dedupe TTL s
--         6 the reply's author ('' = unknown)
-- Returns {ok, duplicate, st, agent, oagent, last_agent, subject} or {ok=false, error}.
local c = ARGV[2]
local dk = ARGV[4] ~= '' and k_dedupe(ARGV[4]) or nil
if dk and redis.call('EXISTS', dk) == 1 then return result({ok = true, duplicate = true}) end
local cs = redis.call('HMGET', k_case(c), 'st', 'agent', 'oagent', 'last_agent', 'cust',
  'subject')
if not cs[1] or not cs[5] then return result({ok = false, error = 'case.unknown'}) end
redis.call('RPUSH', k_timeline(cs[5]), ARGV[3])
log('case.delivery_failed', {'case', c, 'agent', ARGV[6]})
if dk then redis.call('SET', dk, '1', 'EX', tonumber(ARGV[5])) end
return result({ok = true, duplicate = false, st = cs[1], agent = cs[2] or '',
  oagent = cs[3] or '', last_agent = cs[4] or '', subject = cs[6] or ''})
