-- timers_run.lua — fire every timer of the workspace that is due, exactly once: whichever router
-- process runs this first removes the timer and applies its transition in the same atomic call,
-- so a node that dies after making an offer cannot leave it pending past its deadline.
-- Timer members of the timers ZSET (score = due time, ms):
--   o|<offer>          offer deadline: the offer times out, the case goes back with its age;
--                      an agent who misses max_missed offers in a row is set to away_status,
--                      and their other pending offers go on to the next agents
--   e|<case>|<step>    workflow step timeout: the case moves on to the next step (same age)
--   f|<case>|<agent>|<n>  follow-up reminder for an agent: pushed, and kept until they dismiss
--                      it (reminder.dismiss), so one due while they are away waits for them
--   g|<agent>|<token>  reconnect grace over: the agent goes offline, pending offers rescinded
--   r|<case>|<agent>   a refusal has lapsed: the agent may be offered the case again; if it is
--                      still waiting, they pull (no free agent but those who refused it could
--                      have left it waiting)
--   v|<case>|<visitor> a chat's last widget closed a grace ago (chat_presence): if none has
--                      opened it since, the agent holding it is told the visitor left (once:
--                      'vleft'; not after the visitor ended the chat), and an unanswered one is
--                      returned in 'gone' for the caller to end as the visitor's End chat would
-- KEYS[1] workspace prefix
-- ARGV    now, max timers to fire, max missed offers in a row, away status, ms a refusal lasts
-- Returns {fired, offers, push=[{agent, frame}], gone=[{case, visitor}]}.
-- The event log is trimmed here, on every node's timer tick, rather than by each XADD: six
-- entries per case carried three more arguments each, and Redis formats every argument of a
-- write again for the AOF. It may pass LOG_MAXLEN by a tick's worth of entries.
redis.call('XTRIM', k_log(), 'MAXLEN', '~', LOG_MAXLEN)
local limit = tonumber(ARGV[2])
local max_missed = tonumber(ARGV[3])
local due = redis.call('ZRANGEBYSCORE', k_timers(), '-inf', NOW, 'LIMIT', 0, limit)
local offers, push, gone = {}, {}, {}

-- A customer as an agent knows them: their name, else an email or phone they wrote from,
-- else the web chat visitor they are (as the console names one: its id's last 6 characters).
local function customer_label(u)
  local prof = redis.call('HGETALL', k_customer(u))
  local addr, visitor = '', ''
  for i = 1, #prof, 2 do
    local f = prof[i]
    if f == 'name' and prof[i + 1] ~= '' then return prof[i + 1] end
    if addr == '' and (string.sub(f, 1, 8) == 'i:email:' or string.sub(f, 1, 8) == 'i:phone:') then
      addr = string.sub(f, 9)
    elseif string.sub(f, 1, 10) == 'i:visitor:' then
      local v = string.sub(f, 11)
      visitor = 'web chat visitor ' .. (#v > 8 and ('…' .. string.sub(v, -6)) or v)
    end
  end
  return addr ~= '' and addr or visitor
end

-- Keep a fired reminder until the agent dismisses it (at most the latest 100 of them).
local function keep_reminder(a, frame)
  local rk = k_agent_reminders(a)
  if redis.call('HLEN', rk) >= 100 then
    local oldest, at = nil, math.huge
    local all = redis.call('HGETALL', rk)
    for i = 1, #all, 2 do
      local due = tonumber(string.match(all[i + 1], '"due":([%d%.e+]+)')) or 0
      if due < at then oldest, at = all[i], due end
    end
    if oldest then redis.call('HDEL', rk, oldest) end
  end
  redis.call('HSET', rk, frame.id, cjson.encode(frame))
end

for _, m in ipairs(due) do
  redis.call('ZREM', k_timers(), m)
  local parts = split(m, '|')
  local kind = parts[1]
  if kind == 'o' then
    local o = parts[2]
    local a = end_offer(o, 'timeout', offers, nil, tonumber(ARGV[5]))
    if a then
      push[#push + 1] = {agent = a, frame = {type = 'offer.rescinded', offer = o,
        case = offer_case(o), reason = 'timeout'}}
      local missed = redis.call('HINCRBY', k_agent(a), 'missed', 1)
      if max_missed > 0 and missed >= max_missed and hget(k_agent(a), 'r') == '1' then
        redis.call('HSET', k_agent(a), 'st', ARGV[4], 'r', '0')
        log('agent.status', {'agent', a, 'status', ARGV[4], 'reason', 'missed_offers'})
        push[#push + 1] = {agent = a, frame = {type = 'status', status = ARGV[4],
          reason = 'missed_offers'}}
        for _, frame in ipairs(rescind_all(a, offers)) do
          push[#push + 1] = {agent = a, frame = frame}
        end
      end
      refresh_agent(a)
      pull(a, offers)
    end
  elseif kind == 'e' then
    local c, step = parts[2], parts[3]
    local cs = redis.call('HMGET', k_case(c), 'st', 'step', 'q', 'pool')
    if cs[2] == step then
      if cs[1] == 'queued' then
        -- the queue it leaves unanswered (its service level counts it: router/stats.py); not
        -- a step for one agent (a transfer to them, a reopen), which waits in its queue
        local left = cs[3] or ''
        if string.sub(cs[4] or '', 1, 2) == 'a~' then left = '' end
        log('case.escalated', {'case', c, 'from_step', step, 'queue', left})
        enter_step(c, tonumber(step) + 1, offers, true)
      elseif cs[1] == 'offered' then
        redis.call('HSET', k_case(c), 'esc', '1')
      end
    end
  elseif kind == 'f' then
    local c, a = parts[2], parts[3]
    redis.call('ZREM', k_agent_followups(a), c .. '|' .. parts[4])  -- set, now due
    -- (an agent removed since they set it: nobody to remind; agent_remove.lua)
    if redis.call('EXISTS', k_agent(a)) == 1 then
      local cs = redis.call('HMGET', k_case(c), 'followup:' .. parts[4], 'cust', 'subject', 'ch',
        'st')
      -- what identifies the case to the agent, even once it is closed and off their screen
      local frame = {type = 'reminder', id = c .. '|' .. parts[4], case = c, note = cs[1] or '',
        customer = cs[2] and customer_label(cs[2]) or '', subject = cs[3] or '',
        channel = cs[4] or '', status = cs[5] or '', due = NOW / 1000}
      keep_reminder(a, frame)
      push[#push + 1] = {agent = a, frame = frame}
      log('case.reminder', {'case', c, 'agent', a})
    end
  elseif kind == 'g' then
    local a, token = parts[2], parts[3]
    if hget(k_agent(a), 'grace') == token then
      redis.call('HSET', k_agent(a), 'st', 'offline', 'r', '0', 'grace', '')
      rescind_all(a, offers)  -- nobody is there to tell
      refresh_agent(a)
      log('agent.status', {'agent', a, 'status', 'offline', 'reason', 'disconnected'})
    end
  elseif kind == 'r' then
    local c, a = parts[2], parts[3]
    local ck = k_case(c)
    local cs = redis.call('HMGET', ck, 'x', 'st')
    local i = cs[1] and string.find(cs[1], '|' .. a .. '|', 1, true)
    if i and (cs[2] == 'queued' or cs[2] == 'offered') then
      redis.call('HSET', ck, 'x', string.sub(cs[1], 1, i) .. string.sub(cs[1], i + #a + 2))
      if cs[2] == 'queued' and redis.call('EXISTS', k_agent(a)) == 1 then pull(a, offers) end
    end
  elseif kind == 'v' then
    local c, visitor = parts[2], parts[3]
    local ck = k_case(c)
    local cs = redis.call('HMGET', ck, 'wv', 'st', 'agent', 'ended')
    if (tonumber(cs[1]) or 0) <= 0 then
      if cs[2] == 'queued' or cs[2] == 'offered' then
        gone[#gone + 1] = {case = c, visitor = visitor}
      elseif (cs[2] == 'assigned' or cs[2] == 'wrapping') and cs[3] and not cs[4]
          and redis.call('HSETNX', ck, 'vleft', NOW_S) == 1 then
        push[#push + 1] = {agent = cs[3], frame = {type = 'case.updated', case = c,
          event = 'visitor.left', visitor_left = NOW}}
      end
    end
  end
end
return result({fired = #due, offers = offers, push = push, gone = gone})
