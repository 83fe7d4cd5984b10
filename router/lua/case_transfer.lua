-- case_transfer.lua — move a case to a new plan (a queue, or a named agent then a fallback
-- queue) keeping its age and timeline. Used by an agent transferring an assigned case (their
-- capacity is freed, they pull their next case; not one in wrap-up, whose conversation has
-- ended: case.wrapping) and by a supervisor moving a waiting case
-- (agent id '' — the caller has checked the role; not to the queue it waits in:
-- case.same_queue). A pending offer on the case is rescinded.
-- A supervisor may also take an assigned or wrapping case back from its agent (signed out,
-- gone home): the agent's capacity is freed and their consoles are told (case.removed).
-- A call handed on after its caller hung up becomes a callback (the next agent calls the
-- caller back, at the number the case knows), as a live call can't be put through to them.
-- KEYS[1] workspace prefix
-- ARGV    now, agent id or '', case id, plan JSON [{pool|agent, queue, pri, due}, ...],
--         timeline entry JSON (the transfer note) or '', target agent id or '', ms before
--         the case may be offered to the transferring agent again (0 = never; refuse in _lib)
-- Returns {ok, offers, rescinded, push} or {ok=false, error=...}.
local a, c = ARGV[2], ARGV[3]
local ck = k_case(c)
local cs = redis.call('HMGET', ck, 'st', 'agent', 'ch', 'cust', 'offer', 'q', 'plan_start',
  'pool')
if not cs[1] then return result({ok = false, error = 'case.unknown'}) end
local offers = {}
local rescinded = {}
local push = {}
local out = a  -- the agent the case leaves, who is not offered it again for a while
if a ~= '' then
  if cs[2] ~= a or (cs[1] ~= 'assigned' and cs[1] ~= 'wrapping') then
    return result({ok = false, error = 'case.unknown'})
  end
  if cs[1] == 'wrapping' then return result({ok = false, error = 'case.wrapping'}) end
elseif cs[1] == 'assigned' or cs[1] == 'wrapping' then
  out = cs[2]
  local ok, plan = pcall(cjson.decode, ARGV[4])
  local to = ok and type(plan) == 'table' and type(plan[1]) == 'table' and plan[1].queue or ''
  push[1] = {agent = out, frame = {type = 'case.removed', case = c, reason = 'moved', queue = to}}
elseif cs[1] ~= 'queued' and cs[1] ~= 'offered' then
  return result({ok = false, error = 'case.' .. cs[1]})
elseif cs[1] == 'queued' then
  -- a waiting case moved to the queue it waits in: nothing would change but a history entry
  local ok, plan = pcall(cjson.decode, ARGV[4])
  local to = ok and type(plan) == 'table' and type(plan[1]) == 'table' and plan[1].queue or ''
  if to ~= '' and to == cs[6] then return result({ok = false, error = 'case.same_queue'}) end
end
if out ~= '' and cs[3] == 'voice' then
  -- the caller hung up on a call that is handed on: nobody is on the line for the next agent
  -- to be put through to, so they call the customer back (the bridge dials out for a callback)
  local v = redis.call('HMGET', ck, 'ended', 'callback', 'attrs')
  if v[1] and v[1] ~= '' and v[2] ~= '1' then
    local attrs = v[3] or '{}'
    local ok, t = pcall(cjson.decode, attrs)
    if not ok or type(t) ~= 'table' then t = {} end
    local number = t.callback_number
    if type(number) ~= 'string' or number == '' then
      number = nil
      -- the number the call came from (E.164: + and 7 to 15 digits), else the customer's
      local caller = type(t.caller) == 'string' and string.match(t.caller, '^%+[1-9](%d+)$')
      if caller and #caller >= 6 and #caller <= 14 then
        number = t.caller
      else
        local ids = redis.call('HKEYS', k_customer(cs[4]))
        table.sort(ids)
        for _, f in ipairs(ids) do
          if string.sub(f, 1, 8) == 'i:phone:' then number = string.sub(f, 9) break end
        end
      end
      local spliced = number and with_callback_number(attrs, number)
      if spliced then redis.call('HSET', ck, 'attrs', spliced) else number = nil end
    end
    -- ('cbwhy': the caller did not ask; the console says why the next agent calls them back)
    if number then redis.call('HSET', ck, 'callback', '1', 'cbwhy', 'hangup') end
  end
end
if out ~= '' then
  redis.call('SREM', k_agent_cases(out), c)
  release(out, cs[3])
  chat_event(c, cs[3], 'transferred', out)
  redis.call('HSET', ck, 'agent', '')
else
  if cs[1] == 'offered' then
    local oa = end_offer(cs[5], 'rescinded', offers, true)
    if oa then
      rescinded[#rescinded + 1] = {offer = cs[5], case = c, agent = oa}
      refresh_agent(oa)
      pull(oa, offers)
    end
  end
  dequeue(c)
end
-- to an agent: its first step names them (enter_step). 'plan_start' is when the customer
-- began waiting, which the service level and the waiting lists count from, and what a plan's
-- step timeouts count from: an agent had the case, so the customer was served until now and
-- waits again from here (its age, which ranks it, is kept); a supervisor moving a waiting
-- case keeps it, as the customer goes on waiting (a move's plan has no timeout to count).
redis.call('HSET', ck, 'plan', ARGV[4], 'st', 'queued', 'transferred', NOW_S)
if out ~= '' then redis.call('HSET', ck, 'plan_start', NOW_S) end
if ARGV[5] ~= '' then redis.call('RPUSH', k_timeline(cs[4]), ARGV[5]) end
if out ~= '' then
  if a == '' then
    log('case.transferred', {'case', c, 'agent', a, 'to', ARGV[6], 'from_agent', out})
  else
    log('case.transferred', {'case', c, 'agent', a, 'to', ARGV[6]})
  end
else
  -- a supervisor moved a waiting case: the customer goes on waiting (its wait is not
  -- restarted), and the queue it leaves unanswered is told how long it waited there
  -- (router/stats.py counts a move past that queue's target as a breach of it)
  -- (a move within its queue leaves none)
  local since = tonumber(cs[7]) or NOW
  local ok, plan = pcall(cjson.decode, ARGV[4])
  local to = ok and type(plan) == 'table' and type(plan[1]) == 'table' and plan[1].queue or ''
  local left = (cs[6] and cs[6] ~= to) and cs[6] or ''
  -- not a step for one agent (a transfer to them, a reopen): it waits in its queue, and its
  -- timeout counts against no queue either (timers_run.lua)
  if string.sub(cs[8] or '', 1, 2) == 'a~' then left = '' end
  log('case.transferred', {'case', c, 'agent', a, 'to', ARGV[6], 'queue', left,
    'ch', cs[3], 'waited', num_s(NOW - since)})
end
redis.call('HSET', ck, 'x', out ~= '' and refuse('|', c, out, tonumber(ARGV[7])) or '|')
enter_step(c, 1, offers)
if out ~= '' then
  refresh_agent(out, cs[3])
  pull(out, offers, cs[3])
end
return result({ok = true, offers = offers, rescinded = rescinded, push = push})
