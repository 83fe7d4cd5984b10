-- offer_accept.lua — an agent accepts a pending offer: the case becomes assigned to them.
-- Idempotent: accepting an offer you already accepted answers ok again with no second effect.
-- KEYS[1] workspace prefix
-- ARGV    now, agent id, offer id
-- Returns {ok, case, duplicate} or {ok=false, error=offer.unknown|offer.<state>}.
local a, o = ARGV[2], ARGV[3]
local c = offer_case(o)
if c == nil then return result({ok = false, error = 'offer.unknown'}) end
local ck = k_case(c)
-- 'plan_start': when the case last began waiting (created, reopened, handed on by its agent;
-- not moved by a supervisor, case_transfer.lua): its wait, the service level's
local cq = redis.call('HMGET', ck, 'offer', 'ost', 'oagent', 'ch', 'q', 'plan_start', 'thread',
  'cust', 'step', 'first_assigned')
local st = offer_state_for(c, o, a, cq[1], cq[2], cq[3])
if st == nil then return result({ok = false, error = 'offer.unknown'}) end
if st == 'accepted' then return result({ok = true, case = c, duplicate = true}) end
if st ~= 'pending' then return result({ok = false, error = 'offer.' .. st}) end
local ch = cq[4]
-- the offer's deadline and the workflow step's timeout
redis.call('ZREM', k_timers(), 'o|' .. o, 'e|' .. c .. '|' .. (cq[9] or '1'))
redis.call('SREM', k_agent_offers(a), o)
redis.call('SADD', k_agent_cases(a), c)
local f = {'st', 'assigned', 'ost', 'accepted', 'agent', a, 'last_agent', a, 'assigned', NOW_S,
  'updated', NOW_S, 'esc', '0'}
if not cq[10] then
  f[#f + 1] = 'first_assigned'
  f[#f + 1] = NOW_S
end
redis.call('HSET', ck, unpack(f))
local missed = hget(k_agent(a), 'missed')
if missed and missed ~= '0' then redis.call('HSET', k_agent(a), 'missed', 0) end
log('offer.accepted', {'case', c, 'agent', a, 'offer', o, 'queue', cq[5], 'ch', ch,
  'waited', num_s(NOW - (tonumber(cq[6]) or NOW))})
chat_event(c, ch, 'joined', a)
if ch == 'voice' then
  -- the bridge that holds the call connects it to the agent (durable, via the outbox)
  call_connect(c, cq[8] or '', a, cq[7] or '', hget(ck, 'src') or '')  -- src: only calls need it
end
return result({ok = true, case = c, duplicate = false})
