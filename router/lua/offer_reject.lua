-- offer_reject.lua — an agent declines a pending offer. The case goes back with its original age
-- and is offered to the next eligible agent (never straight back to this one); the agent may be
-- moved to a configured status; then the agent pulls its next case if still routable.
-- Idempotent: rejecting an offer you already rejected answers ok with no second effect.
-- KEYS[1] workspace prefix
-- ARGV    now, agent id, offer id, status after reject ('' = unchanged), routable after
-- Returns {ok, case, duplicate, offers} or {ok=false, error=...}.
local a, o = ARGV[2], ARGV[3]
local of = redis.call('HMGET', k_offer(o), 'st', 'case', 'agent', 'ch')
if not of[1] or of[3] ~= a then return result({ok = false, error = 'offer.unknown'}) end
if of[1] == 'rejected' then return result({ok = true, case = of[2], duplicate = true}) end
if of[1] ~= 'pending' then return result({ok = false, error = 'offer.' .. of[1]}) end
local offers = {}
end_offer(o, 'rejected', offers)
if ARGV[4] ~= '' then
  redis.call('HSET', k_agent(a), 'st', ARGV[4], 'r', ARGV[5])
  refresh_agent(a)
  pull(a, offers)
else
  pull(a, offers, of[4])
end
return result({ok = true, case = of[2], duplicate = false, offers = offers,
  status = hget(k_agent(a), 'st')})
