-- event_ingest.lua — one normalized channel event, from dedupe to offer, in one atomic call:
-- dedupe by idempotency key; resolve the customer from their identities; thread the event onto
-- an open case (or reopen a recently resolved one, preferring its last agent, or open a new
-- case; a message naming a case closed for good goes on in the case its thread went on in);
-- append it to the customer's timeline; and for a new case enter workflow step 1, which
-- offers it to the best available agent if there is one.
-- KEYS[1] workspace prefix
-- ARGV    1 now  2 event id  3 channel  4 kind  5 identities JSON ["email:a@b", ...], claims
--         with "?" in front ("?email:a@b": recorded on the customer, never linked)  6 name
--         7 thread key ('' = none)  8 verified case id ('' = none)  9 timeline entry JSON
--         10 id for a new case  11 id for a new customer  12 plan JSON  13 case fields JSON
--         14 reopen window ms  15 reopen plan JSON  16 call sequence number ('' = none)
--         17 dedupe TTL s  18 thread scope ('' = shared): a bridge's threads are its own
--         ("bridge:<id>"), so two bridges, or a bridge and the widget, never share a case by
--         sending the same thread id
-- Returns {ok, case, customer, action, duplicate, offers, push}; action is one of created,
-- appended, reopened, abandoned, stale, ignored. {ok=false, error=case.unknown}: a bridge named
-- a case that does not exist or that another source opened (nothing stored).
local eid, ch, kind = ARGV[2], ARGV[3], ARGV[4]
local dk = k_dedupe(eid)
local seen = redis.call('GET', dk)
if seen then
  local r = cjson.decode(seen)
  r.duplicate = true
  r.offers = {}
  r.push = {}
  return result(r)
end

local tkey = ARGV[7]  -- the thread's key in the threads hash ('thread', the case's field: ARGV[7])
if ARGV[18] ~= '' and tkey ~= '' then tkey = ARGV[18] .. '|' .. tkey end

-- threading: a verified case id, else the channel thread. cv: the case's st, closed, cust and
-- ended, read once
local ends = kind == 'call.ended' or kind == 'conversation.ended'
local c, cv = nil, nil
if ARGV[8] ~= '' then
  cv = redis.call('HMGET', k_case(ARGV[8]), 'st', 'closed', 'cust', 'ended', 'src')
  -- a bridge names only its own cases (or the REST API's, which have no source), and only
  -- cases that exist; the email adapter's verified id of a case gone since goes on by thread
  if ARGV[18] ~= '' and (not cv[1] or ((cv[5] or '') ~= '' and cv[5] ~= ARGV[18])) then
    return result({ok = false, error = 'case.unknown'})
  end
  if cv[1] then c = ARGV[8] else cv = nil end
end
if c == nil and tkey ~= '' then
  c = hget(k_threads(), tkey)
elseif c and tkey ~= '' and not ends and not OPEN[cv[1]]
    and not (cv[1] == 'completed' and NOW - (tonumber(cv[2]) or 0) <= tonumber(ARGV[14])) then
  -- the verified case is closed for good (completed outside the reopen window, cancelled,
  -- abandoned), and an earlier message naming it opened the case its thread names now: the
  -- conversation goes on there (appended, or reopened within that case's window) instead of
  -- opening another case for each message that names the old one. Only a case of the same
  -- customer (a stranger's message naming it opened one of theirs); never for an end, which
  -- ends the conversation it names and no other.
  local t = hget(k_threads(), tkey)
  if t and t ~= c and cv[3] and hget(k_case(t), 'cust') == cv[3] then c, cv = t, nil end
end
if c and cv == nil then cv = redis.call('HMGET', k_case(c), 'st', 'closed', 'cust', 'ended') end

if c == nil and ends then
  -- the end of a conversation we never saw: nothing to record, nobody to create
  local r = {ok = true, case = '', customer = '', action = 'ignored', duplicate = false}
  redis.call('SET', dk, cjson.encode(r), 'EX', tonumber(ARGV[17]))
  r.offers = {}
  r.push = {}
  return result(r)
end

-- identity: the first known identity names the customer; unknown ones are linked to it.
-- A claim ("?kind:value": stated, not vouched for) is only recorded on the customer.
local idents, claims = {}, {}
for _, ident in ipairs(cjson.decode(ARGV[5])) do
  if string.sub(ident, 1, 1) == '?' then claims[#claims + 1] = string.sub(ident, 2)
  else idents[#idents + 1] = ident end
end
local owners = #idents > 0 and redis.call('HMGET', k_ids(), unpack(idents)) or {}
local u = nil
for i = 1, #idents do
  if owners[i] then u = owners[i] break end
end
local linked, marks = {}, {}
local new_customer = u == nil
if new_customer then
  u = ARGV[11]
  marks = {'id', u, 'created', NOW_S}
  if ARGV[6] ~= '' then
    marks[#marks + 1] = 'name'
    marks[#marks + 1] = ARGV[6]
  end
  log('customer.created', {'customer', u})
end
local conflicts = {}
for i, ident in ipairs(idents) do
  local other = owners[i]
  if not other then
    linked[#linked + 1] = ident
    linked[#linked + 1] = u
    marks[#marks + 1] = 'i:' .. ident
    marks[#marks + 1] = '1'
  elseif other ~= u then
    log('identity.conflict', {'customer', u, 'other', other, 'identity', ident})
    conflicts[#conflicts + 1] = other
  end
end
for _, claim in ipairs(claims) do
  marks[#marks + 1] = 'claim:' .. claim
  marks[#marks + 1] = '1'
end
if #linked > 0 then redis.call('HSET', k_ids(), unpack(linked)) end
if #marks > 0 then redis.call('HSET', k_customer(u), unpack(marks)) end
if new_customer then
  NEW_CUSTOMER = {id = u, profile = marks, timeline = {}}
elseif ARGV[6] ~= '' then
  redis.call('HSETNX', k_customer(u), 'name', ARGV[6])
end

local offers, push = {}, {}
local action = 'appended'

-- a follow-up goes on the timeline of the case's customer (a forwarded reply's sender is
-- identified as themselves, but the message belongs to the conversation it answers). The
-- entry (a JSON object, never empty: router/ingest.py timeline_entry) gets its case spliced in
-- as text rather than being decoded and encoded again; entry() decodes it for a push.
local text = nil
local function append(case_id, owner)
  owner = owner or hget(k_case(case_id), 'cust') or u
  text = '{"case":' .. cjson.encode(case_id) .. ',' .. string.sub(ARGV[9], 2)
  redis.call('RPUSH', k_timeline(owner), text)
  if NEW_CUSTOMER ~= nil and NEW_CUSTOMER.id == owner then
    NEW_CUSTOMER.timeline[#NEW_CUSTOMER.timeline + 1] = text
  end
end
local function entry() return cjson.decode(text) end

local function notify(case_id, frame)
  local cs = redis.call('HMGET', k_case(case_id), 'st', 'agent', 'oagent')
  local a = (cs[1] == 'offered') and cs[3] or cs[2]
  if a and a ~= '' and OPEN[cs[1]] then push[#push + 1] = {agent = a, frame = frame} end
end

local st = cv and cv[1] or nil
local was_ended = cv ~= nil and cv[4] and cv[4] ~= ''  -- the customer had ended it
if c and ARGV[16] ~= '' then
  local last = tonumber(hget(k_case(c), 'seq') or '-1')
  if tonumber(ARGV[16]) <= last then
    action = 'stale'
    st = 'stale'
  else
    redis.call('HSET', k_case(c), 'seq', ARGV[16])
  end
end

if st == 'stale' then
  -- an older call status callback arrived after a newer one: recorded as seen, not applied
elseif c and OPEN[st] then
  if kind == 'call.ended' or kind == 'conversation.ended' then
    append(c)
    -- a caller who asked to be called back hangs up on purpose: the case keeps its place
    local callback = kind == 'call.ended' and hget(k_case(c), 'callback') == '1'
    if (st == 'queued' or st == 'offered') and not callback then
      if st == 'offered' then
        local o = hget(k_case(c), 'offer')
        local oa = end_offer(o, 'rescinded', offers, true)
        if oa then
          push[#push + 1] = {agent = oa, frame = {type = 'offer.rescinded', offer = o, case = c,
            reason = 'abandoned'}}
          pull(oa, offers)
        end
      end
      end_unassigned(c, 'abandoned', kind)
      action = 'abandoned'
    else
      redis.call('HSET', k_case(c), 'ended', NOW_S, 'updated', NOW_S)
      notify(c, {type = 'case.updated', case = c, event = kind, entry = entry()})
    end
  elseif kind == 'callback.requested' then
    append(c)
    local set = {'callback', '1', 'updated', NOW_S}
    -- the number the caller left joins the case's attributes, where the voice bridge and the
    -- console look for it
    local left = cjson.decode(cjson.decode(ARGV[13]).attrs or '{}').callback_number
    if type(left) == 'string' and left ~= '' then
      local attrs = with_callback_number(hget(k_case(c), 'attrs') or '{}', left)
      if attrs then
        set[#set + 1] = 'attrs'
        set[#set + 1] = attrs
      end
    else
      left = nil
    end
    redis.call('HSET', k_case(c), unpack(set))
    redis.call('HDEL', k_case(c), 'cbwhy')  -- asked for now, whatever made it one before
    notify(c, {type = 'case.updated', case = c, event = kind, entry = entry(),
      callback_number = left})
  elseif st == 'wrapping' then
    -- the customer wrote again during wrap-up, which ended the conversation: it resumes with
    -- the same agent (back to assigned: they may reply), and a chat's widget hears them rejoin
    append(c)
    local a = hget(k_case(c), 'agent')
    redis.call('HSET', k_case(c), 'st', 'assigned', 'updated', NOW_S, 'resumed', NOW_S)
    if was_ended then redis.call('HDEL', k_case(c), 'ended') end  -- they are back
    log('case.resumed', {'case', c, 'agent', a or ''})
    chat_event(c, ch, 'joined', a)
    notify(c, {type = 'case.message', case = c, entry = entry(), status = 'assigned'})
  else
    append(c)
    redis.call('HSET', k_case(c), 'updated', NOW_S)
    if was_ended then redis.call('HDEL', k_case(c), 'ended') end  -- they are back
    notify(c, {type = 'case.message', case = c, entry = entry()})
  end
elseif kind == 'call.ended' or kind == 'conversation.ended' then
  action = 'ignored'
else
  local reopen = c ~= nil and st == 'completed'
    and NOW - (tonumber(cv[2]) or 0) <= tonumber(ARGV[14])
  local plan = ARGV[12]
  local known, owner = nil, nil  -- a new case's routing fields and customer, as just written
  if reopen then
    action = 'reopened'
    if ARGV[15] ~= '' then plan = ARGV[15] end
    -- a callback the caller asked for last time was settled with the case (a new request in
    -- this very event marks it again below)
    redis.call('HSET', k_case(c), 'st', 'queued', 'age', NOW - EPOCH_MS, 'reopened', NOW_S,
      'x', '|', 'agent', '', 'plan', plan, 'plan_start', NOW_S, 'updated', NOW_S, 'callback', '0')
    -- open again: how and when it was closed no longer describe it (a new close sets them)
    redis.call('HDEL', k_case(c), 'disposition', 'closed')
    if was_ended then redis.call('HDEL', k_case(c), 'ended') end  -- settled with it
    log('case.reopened', {'case', c, 'customer', u})
  else
    action = 'created'
    c = ARGV[10]
    local ck = k_case(c)
    local fields = {'id', c, 'cust', u, 'ch', ch, 'st', 'queued', 'created', NOW_S,
      'updated', NOW_S, 'age', num_s(NOW - EPOCH_MS), 'plan', plan, 'plan_start', NOW_S, 'x', '|',
      'thread', ARGV[7], 'event', eid}
    for f, v in pairs(cjson.decode(ARGV[13])) do
      fields[#fields + 1] = f
      fields[#fields + 1] = v
    end
    if ARGV[16] ~= '' then
      fields[#fields + 1] = 'seq'
      fields[#fields + 1] = ARGV[16]
    end
    case_hold(c, fields)  -- written by case_flush below, with the step and offer fields
    redis.call('RPUSH', k_customer_cases(u), c)
    if tkey ~= '' then redis.call('HSET', k_threads(), tkey, c) end
    log('case.created', {'case', c, 'customer', u, 'ch', ch})
    known, owner = {plan, ch, NOW_S, false, false, false, '|'}, u
  end
  if kind == 'callback.requested' then case_set(c, 'callback', '1') end
  append(c, owner)
  enter_step(c, 1, offers, false, known)
  case_flush()
end

local r = {ok = true, case = c or '', customer = u, action = action, duplicate = false}
redis.call('SET', dk, cjson.encode(r), 'EX', tonumber(ARGV[17]))
r.offers = offers
r.push = push
r.conflicts = conflicts
return result(r)
