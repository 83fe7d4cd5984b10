-- case_reopen.lua — an agent takes a closed case back to follow it up: it is assigned to them
-- at once (no offer: they asked for it), if they handled it last or hold a reminder for it, and
-- have room on its channel. A call becomes a callback: the bridge that holds the line calls the
-- agent, then the customer (outbox 'call.connect', as for an accepted callback offer).
-- Idempotent: reopening a case that is already theirs answers ok again with no second effect.
-- KEYS[1] workspace prefix
-- ARGV    now, agent id, case id, timeline entry JSON ('' = none)
-- Returns {ok, case, duplicate, entry, offers} or {ok=false, error=case.unknown|case.<state>|
-- agent.full, agent=who has it or is offered it (case.assigned, case.wrapping, case.offered),
-- ch=its channel and cap=the agent's capacity on it (agent.full)}.
local a, c = ARGV[2], ARGV[3]
local ck = k_case(c)
local cs = redis.call('HMGET', ck, 'st', 'agent', 'last_agent', 'ch', 'cust', 'thread', 'q',
  'oagent')
local st, ch = cs[1], cs[4]
if not st then return result({ok = false, error = 'case.unknown'}) end
if cs[2] == a and (st == 'assigned' or st == 'wrapping') then
  return result({ok = true, case = c, duplicate = true})
end
local mine = cs[2] == a or cs[3] == a
if not mine then
  -- a reminder they were given for it (kept until dismissed: timers_run.lua keep_reminder)
  for _, id in ipairs(redis.call('HKEYS', k_agent_reminders(a))) do
    if string.sub(id, 1, #c + 1) == c .. '|' then mine = true break end
  end
end
if not mine then return result({ok = false, error = 'case.unknown'}) end
if st ~= 'completed' and st ~= 'abandoned' and st ~= 'cancelled' then
  -- open, and someone else's or on its way to someone: who has it, for the agent to read
  local who = ''
  if st == 'assigned' or st == 'wrapping' then who = cs[2] elseif st == 'offered' then who = cs[8] end
  return result({ok = false, error = 'case.' .. st, agent = who or '', queue = cs[7] or ''})
end
local load = redis.call('HMGET', k_agent(a), 'cap:' .. ch, 'load:' .. ch)
if (tonumber(load[1]) or 0) - (tonumber(load[2]) or 0) <= 0 then
  return result({ok = false, error = 'agent.full', ch = ch, cap = tonumber(load[1]) or 0})
end
-- its age starts again, as a customer's reopening starts it (event_ingest.lua): handed on, it
-- waits as a case of now, not ahead of everyone by its first contact's age
redis.call('HSET', ck, 'st', 'assigned', 'agent', a, 'last_agent', a, 'assigned', NOW_S,
  'reopened', NOW_S, 'updated', NOW_S, 'plan_start', NOW_S, 'age', num_s(NOW - EPOCH_MS),
  'x', '|', 'esc', '0', 'callback', ch == 'voice' and '1' or '0')
-- open again: how and when it was closed no longer describe it (a new close sets them)
redis.call('HDEL', ck, 'disposition', 'closed', 'ended', 'reason', 'cbwhy')
-- a call: the callback is the agent's follow-up, not something the caller asked for
if ch == 'voice' then redis.call('HSET', ck, 'cbwhy', 'followup') end
redis.call('SADD', k_agent_cases(a), c)
-- the new load may open a pool with a live-load condition to them (make_offer's rule): pull
local pools, known = move_load(a, ch, 1)
local offers = {}
for i = 1, #pools, 2 do
  local conds = load_conds(pools[i])
  if conds ~= nil and load_opens(conds, ch, 1) then
    pull(a, offers, ch, 1, known)
    break
  end
end
-- (with its queue: the statistics time its handling from here, as from an accepted offer)
log('case.reopened', {'case', c, 'customer', cs[5] or '', 'agent', a, 'queue', cs[7] or ''})
local entry = nil
if ARGV[4] ~= '' and cs[5] then
  redis.call('RPUSH', k_timeline(cs[5]), ARGV[4])
  entry = cjson.decode(ARGV[4])
end
chat_event(c, ch, 'joined', a)
if ch == 'voice' then
  call_connect(c, cs[5] or '', a, cs[6] or '', hget(ck, 'src') or '')
end
return result({ok = true, case = c, duplicate = false, entry = entry, offers = offers})
