-- case_reply.lua — an agent (or a note-taker) adds an outbound message or an internal note to a
-- case they hold (a reply only while it is assigned, a note until it is completed). A reply goes
-- to the customer through the case's channel: appended to the
-- timeline, queued on the workspace outbox stream for the channel's adapter, and published to
-- the case's chat widget connections. A note is only appended to the timeline.
-- KEYS[1] workspace prefix
-- ARGV    now, agent id, case id, timeline entry JSON, 'reply'|'note'
-- Returns {ok, entry, channel, customer} or {ok=false, error=case.unknown|case.<state>|
-- reply.channel (a reply on a call)}.
local a, c = ARGV[2], ARGV[3]
local ck = k_case(c)
local cs = redis.call('HMGET', ck, 'st', 'agent', 'ch', 'cust', 'thread', 'subject', 'src')
if not cs[1] or cs[2] ~= a then return result({ok = false, error = 'case.unknown'}) end
-- a note may be added during wrap-up; a reply may not: wrapping up ended the conversation (the
-- chat widget was told the agent closed it)
if cs[1] ~= 'assigned' and (cs[1] ~= 'wrapping' or ARGV[5] == 'reply') then
  return result({ok = false, error = 'case.' .. cs[1]})
end
if ARGV[5] == 'reply' and cs[3] == 'voice' then  -- a call takes notes; its words go by phone
  return result({ok = false, error = 'reply.channel'})
end
local entry = cjson.decode(ARGV[4])
entry.case = c
if ARGV[5] == 'reply' then entry.ch = cs[3] else entry.ch = 'note' end
local raw = cjson.encode(entry)
redis.call('RPUSH', k_timeline(cs[4]), raw)
redis.call('HSET', ck, 'updated', NOW_S)
if ARGV[5] == 'reply' then
  redis.call('HSETNX', ck, 'first_reply', NOW_S)
  redis.call('XADD', k_outbox(), 'MAXLEN', '~', 100000, '*', 'kind', 'deliver', 'ch', cs[3],
    'case', c,
    'customer', cs[4], 'thread', cs[5] or '', 'subject', cs[6] or '', 'entry', raw,
    'src', cs[7] or '')  -- only the consumer that brought the case in delivers it ('' = any)
  redis.call('PUBLISH', k_push_case(c), raw)
end
log('case.' .. ARGV[5], {'case', c, 'agent', a})
return result({ok = true, entry = entry, channel = cs[3], customer = cs[4]})
