-- offer_accept.lua — an agent accepts a pending offer: the case becomes assigned to them.
-- Idempotent: accepting an offer you already accepted answers ok again with no second effect.
-- KEYS[1] workspace prefix
-- ARGV    now, agent id, offer id
-- Returns {ok, case, duplicate} or {ok=false, error=offer.unknown|offer.not_yours|offer.<state>}.
local a, o = ARGV[2], ARGV[3]
local of = redis.call('HMGET', k_offer(o), 'st', 'case', 'agent', 'ch')
if not of[1] then return result({ok = false, error = 'offer.unknown'}) end
if of[3] ~= a then return result({ok = false, error = 'offer.unknown'}) end
local c = of[2]
if of[1] == 'accepted' then return result({ok = true, case = c, duplicate = true}) end
if of[1] ~= 'pending' then return result({ok = false, error = 'offer.' .. of[1]}) end
local ck = k_case(c)
local cq = redis.call('HMGET', ck, 'q', 'created', 'thread', 'cust', 'step', 'first_assigned')
redis.call('HSET', k_offer(o), 'st', 'accepted', 'ended', NOW_S)
-- the offer's deadline and the workflow step's timeout
redis.call('ZREM', k_timers(), 'o|' .. o, 'e|' .. c .. '|' .. (cq[5] or '1'))
redis.call('SREM', k_agent_offers(a), o)
redis.call('SADD', k_agent_cases(a), c)
local f = {'st', 'assigned', 'agent', a, 'last_agent', a, 'assigned', NOW_S, 'updated', NOW_S,
  'esc', '0'}
if not cq[6] then
  f[#f + 1] = 'first_assigned'
  f[#f + 1] = NOW_S
end
redis.call('HSET', ck, unpack(f))
local missed = hget(k_agent(a), 'missed')
if missed and missed ~= '0' then redis.call('HSET', k_agent(a), 'missed', 0) end
log('offer.accepted', {'case', c, 'agent', a, 'offer', o, 'queue', cq[1], 'ch', of[4],
  'waited', num_s(NOW - (tonumber(cq[2]) or NOW))})
chat_event(c, of[4], 'joined', a)
if of[4] == 'voice' then
  -- the bridge that holds the call connects it to the agent (durable, via the outbox)
  redis.call('XADD', k_outbox(), 'MAXLEN', '~', 100000, '*', 'kind', 'call.connect', 'ch', 'voice',
    'case', c, 'customer', cq[4] or '', 'thread', cq[3] or '', 'agent', a)
end
return result({ok = true, case = c, duplicate = false})
