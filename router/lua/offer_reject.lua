-- offer_reject.lua — an agent declines a pending offer. The case goes back with its original age
-- and is offered to the next eligible agent (not back to this one for a while); the agent may be
-- moved to a configured status (one that is not routable rescinds their other pending offers);
-- then the agent pulls its next case if still routable.
-- Idempotent: rejecting an offer you already rejected answers ok with no second effect.
-- KEYS[1] workspace prefix
-- ARGV    now, agent id, offer id, status after reject ('' = unchanged), routable after,
--         ms before the case may be offered to this agent again (0 = never; refuse in _lib)
-- Returns {ok, case, duplicate, offers, push} or {ok=false, error=...}.
local a, o = ARGV[2], ARGV[3]
local c = offer_case(o)
if c == nil then return result({ok = false, error = 'offer.unknown'}) end
local of = redis.call('HMGET', k_case(c), 'offer', 'ost', 'oagent', 'ch')
local st = offer_state_for(c, o, a, of[1], of[2], of[3])
if st == nil then return result({ok = false, error = 'offer.unknown'}) end
if st == 'rejected' then return result({ok = true, case = c, duplicate = true}) end
if st ~= 'pending' then return result({ok = false, error = 'offer.' .. st}) end
local offers, push = {}, {}
end_offer(o, 'rejected', offers, nil, tonumber(ARGV[6]))
if ARGV[4] ~= '' then
  redis.call('HSET', k_agent(a), 'st', ARGV[4], 'r', ARGV[5])
  if ARGV[5] ~= '1' then
    for _, frame in ipairs(rescind_all(a, offers)) do push[#push + 1] = {agent = a, frame = frame} end
  end
  refresh_agent(a)
  pull(a, offers)
else
  pull(a, offers, of[4])
end
return result({ok = true, case = c, duplicate = false, offers = offers, push = push,
  status = hget(k_agent(a), 'st')})
