-- _lib.lua — helpers shared by every transition script; loaded once, ahead of all of them and
-- of _batch.lua, which runs a batch of transitions in one call (router/store.py).
--
-- Conventions for every script:
--   KEYS[1]  the workspace prefix "sb:{<ws>}:" (its hash slot is the workspace's slot)
--   ARGV[1]  now, in ms since the Unix epoch (the caller's clock; nodes are NTP-synced)
--   returns  a JSON string: {"ok": ..., "offers": [...], "push": [...], ...}
-- Sub-key builders mirror router/keys.py; tests/test_keys.py keeps them in step.

local P = KEYS[1]
-- now, set by _batch.lua before each transition from its ARGV[1]; NOW_S as given, because
-- passing the number to redis.call would format it each time
local NOW, NOW_S = 0, '0'

-- Case ages count from 2024-01-01 so that priority * 2^41 + age fits a double exactly
-- (priorities 0..2047; ages good until 2093). See docs/routing.md "Order".
local EPOCH_MS = 1704067200000
local PRI_SCALE = 2199023255552
local LOG_MAXLEN = '1000000'  -- the event log keeps about this many entries (timers_run trims)

-- A number as the text Redis stores for it. redis.call prints a number argument with %.17g,
-- C's slow floating-point path, as Lua's own number-to-string does with %.14g; the whole
-- numbers the scripts pass (times, loads, scores) take the fast integer path instead.
local function num_s(n)
  if n == math.floor(n) and n > -9007199254740992 and n < 9007199254740992 then
    return string.format('%d', n)
  end
  return string.format('%.17g', n)
end

local function k_cfg() return P .. 'cfg' end
local function k_agents() return P .. 'agents' end
local function k_agent(a) return P .. 'a:' .. a end
local function k_agent_pools(a) return P .. 'a:' .. a .. ':pools' end
local function k_agent_conns(a) return P .. 'a:' .. a .. ':conns' end
local function k_node_agents(n) return P .. 'node:' .. n .. ':agents' end
local function k_node_widgets(n) return P .. 'node:' .. n .. ':widgets' end
local function k_agent_cases(a) return P .. 'a:' .. a .. ':cases' end
local function k_agent_offers(a) return P .. 'a:' .. a .. ':offers' end
local function k_agent_reminders(a) return P .. 'a:' .. a .. ':rem' end
local function k_agent_followups(a) return P .. 'a:' .. a .. ':fu' end
local function k_queues() return P .. 'queues' end
local function k_queue(q) return P .. 'q:' .. q end
local function k_queue_wait(q) return P .. 'q:' .. q .. ':wait' end
local function k_pools() return P .. 'pools' end
local function k_pool(p) return P .. 'p:' .. p end
local function k_pool_agents(p) return P .. 'p:' .. p .. ':agents' end
local function k_pool_av(p, ch) return P .. 'p:' .. p .. ':av:' .. ch end
local function k_pool_wait(p, ch) return P .. 'p:' .. p .. ':w:' .. ch end
local function k_case(c) return P .. 'c:' .. c end
local function k_customer(u) return P .. 'cu:' .. u end
local function k_customer_cases(u) return P .. 'cu:' .. u .. ':cases' end
local function k_timeline(u) return P .. 'cu:' .. u .. ':tl' end
local function k_ids() return P .. 'ids' end
local function k_threads() return P .. 'th' end
local function k_dedupe(e) return P .. 'dd:' .. e end
local function k_timers() return P .. 'timers' end
local function k_log() return P .. 'log' end
local function k_outbox() return P .. 'out' end
local function k_push_case(c) return P .. 'push:c:' .. c end

local OPEN = {queued = true, offered = true, assigned = true, wrapping = true}

local function split(s, sep)
  local out = {}
  if s == nil or s == false or s == '' then return out end
  for part in string.gmatch(s, '([^' .. sep .. ']+)') do out[#out + 1] = part end
  return out
end

local function log(typ, fields)
  redis.call('XADD', k_log(), '*', 't', typ, 'ts', NOW_S, unpack(fields))
end

-- Tell a chat case's widget what its agent did: 'joined' (accepted), 'transferred' (handed it
-- on), 'closed' (ended the conversation), with the agent's display name ('' without one): the
-- node holding the widget shows the name and drops the id (the visitor never sees agent ids),
-- and need not ask Redis for it while it reads pub/sub. Other channels have no one watching.
local function chat_event(c, ch, event, a)
  if ch == 'chat' then
    local name = a and redis.call('HGET', k_agent(a), 'name') or ''
    redis.call('PUBLISH', k_push_case(c),
      cjson.encode({event = event, case = c, agent = a, name = name, ts = NOW / 1000}))
  end
end

-- An agent's pending offers, oldest case first (an offer id starts with its case id, which
-- starts with its creation time): SMEMBERS gives them in hash order, which would rescind them,
-- and so hand their cases to the next agents, in an order that depends on the ids.
local function offers_of(a)
  local ids = redis.call('SMEMBERS', k_agent_offers(a))
  table.sort(ids)
  return ids
end

local function hget(key, field)
  local v = redis.call('HGET', key, field)
  if v == false then return nil end
  return v
end

-- A call for agent a that the bridge holding it connects (the outbox's 'call.connect'), with
-- what the bridge is told read here, not by the node that hands it on (one round trip less
-- while the caller waits): the agent's name, the caller's identities (sorted JSON), and for a
-- callback (the caller hung up first) '1' and the case's attributes, which name the number.
local function call_connect(c, u, a, thread, src)
  local ids = {}
  if u ~= '' then
    for _, f in ipairs(redis.call('HKEYS', k_customer(u))) do
      if string.sub(f, 1, 2) == 'i:' then ids[#ids + 1] = string.sub(f, 3) end
    end
    table.sort(ids)
  end
  local cb = redis.call('HMGET', k_case(c), 'callback', 'attrs')
  local callback = cb[1] == '1'
  redis.call('XADD', k_outbox(), 'MAXLEN', '~', 100000, '*', 'kind', 'call.connect', 'ch', 'voice',
    'case', c, 'customer', u, 'thread', thread, 'agent', a, 'src', src,
    'agent_name', hget(k_agent(a), 'name') or '',
    'identities', #ids > 0 and cjson.encode(ids) or '[]',
    'callback', callback and '1' or '', 'attrs', callback and (cb[2] or '{}') or '')
end

-- An offer lives in its case's hash: the case's last offer in "offer", "oagent", "ost" (its
-- state) and "odl" (its deadline), the earlier ones' ends in "oh" ("<n> <agent> <state>|" each,
-- appended by make_offer). Its id is the case id and the case's offer count, "<case>.<n>", so
-- an answer finds the case without a lookup. nil for an id of another shape.
local function offer_case(o)
  return string.match(o, '^(.+)%.%d+$')
end

-- What agent a is told of offer o of case c, given the case's last offer, its state and its
-- agent: the offer's state ('pending' only for the live one), or nil if it is not a's (or no
-- such offer was made). An earlier offer's end is looked up in the history.
local function offer_state_for(c, o, a, last, ost, oagent)
  if last == o then
    if oagent == a then return ost end
    return nil
  end
  local n = string.match(o, '%.(%d+)$')
  for m, who, st in string.gmatch(hget(k_case(c), 'oh') or '', '(%d+) (%S+) (%a+)|') do
    if m == n then
      if who ~= a then return nil end
      if st == 'pending' then return 'ended' end
      return st
    end
  end
  return nil
end

-- A case's attributes JSON text with "callback_number" added in front, or nil when the text
-- is not an object or names one already. Spliced into the text: decoding and encoding it again
-- would turn an empty list among the attributes into an object.
local function with_callback_number(attrs, number)
  if string.sub(attrs, 1, 1) ~= '{' or string.find(attrs, '"callback_number"', 1, true) then
    return nil
  end
  local rest = string.sub(attrs, 2)
  if rest ~= '}' then rest = ',' .. rest end
  return '{"callback_number":' .. cjson.encode(number) .. rest
end

-- A case this transition creates is held here, not written, while the ingest path fills it in
-- (creation, workflow step, offer): one HSET instead of three, and no read of what it just
-- wrote. Only that path touches it (case_get / case_set); anything else that needs it in
-- Redis calls case_flush() first, and _batch.lua flushes after each transition that returns.
-- NEW_CUSTOMER: a customer this transition creates, with the profile it wrote and its one
-- timeline entry, so that the offer's customer payload needs no read either.
local NEW_CASE, NEW_CUSTOMER = nil, nil

-- The value Redis would store for v.
local function redis_str(v)
  if type(v) == 'number' then return num_s(v) end
  return v
end

local function case_hold(c, fields)
  local by = {}
  for i = 1, #fields, 2 do
    fields[i + 1] = redis_str(fields[i + 1])
    by[fields[i]] = fields[i + 1]
  end
  NEW_CASE = {id = c, list = fields, by = by}
end

local function case_flush()
  if NEW_CASE ~= nil then
    local nc = NEW_CASE
    NEW_CASE = nil
    redis.call('HSET', k_case(nc.id), unpack(nc.list))
  end
end

-- HMGET of case c's fields (a list), from the held new case when it is c.
local function case_get(c, fields)
  local nc = NEW_CASE
  if nc == nil or nc.id ~= c then return redis.call('HMGET', k_case(c), unpack(fields)) end
  local out = {}
  for i, f in ipairs(fields) do
    local v = nc.by[f]
    if v == nil then v = false end
    out[i] = v
  end
  return out
end

-- HSET of case c's fields (field, value, ...), into the held new case when it is c.
local function case_set(c, ...)
  local nc = NEW_CASE
  if nc == nil or nc.id ~= c then return redis.call('HSET', k_case(c), ...) end
  local kv, list = {...}, nc.list
  for i = 1, #kv, 2 do
    local f, v = kv[i], redis_str(kv[i + 1])
    if nc.by[f] == nil then
      list[#list + 1] = f
      list[#list + 1] = v
    else  -- a field set twice (st, updated): a few times per case, over some thirty fields
      for j = 1, #list, 2 do
        if list[j] == f then list[j + 1] = v break end
      end
    end
    nc.by[f] = v
  end
end

-- Waiting order: higher priority first, then oldest; LIFO queues by age alone (newest first).
local function wait_score(pri, age, lifo)
  if lifo == '1' then return -age end
  return -(pri * PRI_SCALE) + age
end

local function excluded(xs, a)
  return xs ~= nil and xs ~= false and string.find(xs, '|' .. a .. '|', 1, true) ~= nil
end

-- Agent availability -------------------------------------------------------------------------

local function agent_free(a, ch)
  local v = redis.call('HMGET', k_agent(a), 'cap:' .. ch, 'load:' .. ch)
  return (tonumber(v[1]) or 0) - (tonumber(v[2]) or 0)
end

-- An agent's idle moment on a channel: the later of becoming available ("idle") and the last
-- change of their load on that channel ("idle:<ch>", set by offers and releases). Per channel,
-- so an offer or a release re-scores only that channel's available sets.
local function idle_on(idle, idle_ch)
  local a, b = tonumber(idle) or 0, tonumber(idle_ch) or 0
  if b > a then return b end
  return a
end

-- Live-load conditions --------------------------------------------------------------------------

-- A pool whose target expression compares the agent's live load (TaskRouter's
-- worker.channel.<ch>.assigned_tasks / available_capacity_percentage) carries those conditions
-- in its id after '#' (router/triage.py load_code): '&'-joined '<ch>.at<op><n>' (assigned tasks:
-- the load on ch, pending offers included) or '<ch>.acp<op><n>' (available capacity per cent,
-- floor(100 * (cap - load) / cap), 0 without capacity), op one of == != < >. Membership and the
-- available sets ignore them; the matching checks them per agent. Ids never hold '#' otherwise,
-- so a pool without conditions costs one string.find and no redis.call.
local function load_conds(p)
  local i = string.find(p, '#', 1, true)
  if i == nil then return nil end
  local out = {}
  for ch, what, op, n in string.gmatch(string.sub(p, i + 1), '([%w_]+)%.(%a+)([=!<>]+)(%-?%d+)') do
    out[#out + 1] = {ch = ch, pct = what == 'acp', op = op, n = tonumber(n)}
  end
  return out
end

-- Whether agent a meets every condition now (one HMGET).
local function load_fits(a, conds)
  local f = {}
  for _, c in ipairs(conds) do
    f[#f + 1] = 'cap:' .. c.ch
    f[#f + 1] = 'load:' .. c.ch
  end
  local v = redis.call('HMGET', k_agent(a), unpack(f))
  for i, c in ipairs(conds) do
    local cap, x = tonumber(v[2 * i - 1]) or 0, tonumber(v[2 * i]) or 0
    if c.pct then
      if cap > 0 then x = math.floor(100 * (cap - x) / cap) else x = 0 end
    end
    local ok
    if c.op == '<' then ok = x < c.n
    elseif c.op == '>' then ok = x > c.n
    elseif c.op == '==' then ok = x == c.n
    else ok = x ~= c.n end
    if not ok then return false end
  end
  return true
end

-- Whether the load on ch moving up (dir 1) or down (dir -1) can make a condition true that
-- was false: assigned tasks rise with the load, the available percentage falls.
local function load_opens(conds, ch, dir)
  for _, c in ipairs(conds) do
    if c.ch == ch then
      local up = (dir > 0) ~= c.pct
      if c.op == '==' or c.op == '!=' or (c.op == '>') == up then return true end
    end
  end
  return false
end

-- Agent a in the available set on channel ch of each of its pools (pool, order value, ... as
-- HGETALL gives its pools hash) when free, scored by order value then idle moment; else out.
-- was_free: a was in them already, so its own one-agent pool ("a~<agent>"), where order means
-- nothing, is left as it is. A score is formatted once per order value, not per pool (Redis
-- would print each number it is given with %.17g).
local function score_pools(a, pools, ch, free, idle, was_free)
  local t = idle - EPOCH_MS
  local scores = {}
  for i = 1, #pools, 2 do
    local p = pools[i]
    if not free then
      redis.call('ZREM', k_pool_av(p, ch), a)
    elseif not (was_free and string.sub(p, 1, 2) == 'a~') then
      local ov = pools[i + 1]
      local score = scores[ov]
      if score == nil then
        score = num_s((tonumber(ov) or 0) * PRI_SCALE + t)
        scores[ov] = score
      end
      redis.call('ZADD', k_pool_av(p, ch), score, a)
    end
  end
end

-- Make the available-agents ZSETs of every pool the agent belongs to reflect the agent's
-- routable flag, free capacity and idle moment on channel only_ch (every channel when nil).
-- Returns the agent's pools hash as HGETALL gives it (pool, order value, ...).
local function refresh_agent(a, only_ch)
  local ak = k_agent(a)
  -- the agent's own pools hash (pool -> order value) avoids a lookup in each pool's big hash
  local pools = redis.call('HGETALL', k_agent_pools(a))
  local function score(ch, routable, v, idle)
    local free = routable and (tonumber(v[1]) or 0) - (tonumber(v[2]) or 0) > 0
    score_pools(a, pools, ch, free, idle_on(idle, v[3]))
  end
  if only_ch then
    local v = redis.call('HMGET', ak, 'cap:' .. only_ch, 'load:' .. only_ch,
      'idle:' .. only_ch, 'r', 'idle')
    score(only_ch, v[4] == '1', v, v[5])
    return pools
  end
  local ag = redis.call('HMGET', ak, 'r', 'idle', 'chs')
  for _, ch in ipairs(split(ag[3], ',')) do
    score(ch, ag[1] == '1', redis.call('HMGET', ak, 'cap:' .. ch, 'load:' .. ch, 'idle:' .. ch),
      ag[2])
  end
  return pools
end

-- Move agent a's load on channel ch by delta (+1 an offer, -1 a release; never below 0), make
-- now their idle moment on ch, and re-score ch in their pools: refresh_agent(a, ch) after the
-- move, in three calls instead of five. Returns the agent's pools as refresh_agent does, and
-- what it read and wrote of the agent ({r, cap, load, pools, nodes}: best_case_for and
-- make_offer reuse it).
local function move_load(a, ch, delta)
  local ak = k_agent(a)
  local v = redis.call('HMGET', ak, 'cap:' .. ch, 'load:' .. ch, 'r', 'idle', 'nodes')
  local load = (tonumber(v[2]) or 0) + delta
  if load < 0 then load = 0 end
  redis.call('HSET', ak, 'load:' .. ch, num_s(load), 'idle:' .. ch, NOW_S)
  local pools = redis.call('HGETALL', k_agent_pools(a))
  local cap = tonumber(v[1]) or 0
  local was_free = v[3] == '1' and cap - (tonumber(v[2]) or 0) > 0
  score_pools(a, pools, ch, v[3] == '1' and cap - load > 0, idle_on(v[4], NOW), was_free)
  return pools, {r = v[3], cap = cap, load = load, pools = pools, nodes = v[5]}
end

local function remove_agent_everywhere(a)
  local chs = split(hget(k_agent(a), 'chs'), ',')
  for _, p in ipairs(redis.call('HKEYS', k_agent_pools(a))) do
    for _, ch in ipairs(chs) do redis.call('ZREM', k_pool_av(p, ch), a) end
  end
end

-- A single-agent pool ("a~<agent>") for known-agent targets and transfers to a named agent.
local function ensure_agent_pool(a)
  local p = 'a~' .. a
  if redis.call('SADD', k_pools(), p) == 1 then
    redis.call('HSET', k_pool(p), 'queue', '', 'filter', 'agent:' .. a, 'kind', 'agent')
  end
  if redis.call('HSETNX', k_pool_agents(p), a, 0) == 1 then
    redis.call('HSET', k_agent_pools(a), p, 0)
    refresh_agent(a)
  end
  return p
end

-- Offers ---------------------------------------------------------------------------------------

-- The timeline's entries are JSON already: they travel as one JSON array text, not decoded
-- and encoded again here (Redis's CPU is the shared resource).
local function customer_payload(u, limit)
  local nu = NEW_CUSTOMER
  if nu ~= nil and nu.id == u then
    return {profile = nu.profile, timeline = '[' .. table.concat(nu.timeline, ',') .. ']',
      total = #nu.timeline}
  end
  local prof = redis.call('HGETALL', k_customer(u))
  local tl = redis.call('LRANGE', k_timeline(u), -limit, -1)
  local total = #tl
  if total >= limit then total = redis.call('LLEN', k_timeline(u)) end
  return {profile = prof, timeline = '[' .. table.concat(tl, ',') .. ']', total = total}
end

-- The case fields an offer carries (router/push.py case_view); the plan and other routing
-- state stay in Redis. make_offer reads them, the offer timeout ('otm') and the case's last
-- offer (numbered from it, then its end kept in the history) at once.
-- (those before 'otm' go out with the offer; the rest only serve make_offer)
local OFFER_FIELDS = {'id', 'ch', 'st', 'pri', 'q', 'cust', 'subject', 'created', 'agent',
  'flt', 'step', 'attrs', 'pool', 'callback', 'disposition', 'reopened', 'transferred', 'otm',
  'offer', 'oagent', 'ost', 'oh'}
local OF_CH, OF_ST, OF_Q, OF_CUST, OF_POOL, OF_CALLBACK, OF_OTM = 2, 3, 5, 6, 13, 14, 18
local OF_OFFER, OF_OAGENT, OF_OST, OF_OH = 19, 20, 21, 22

-- Offer case c to agent a: reserve capacity, arm the deadline, log it. Returns the payload the
-- pushing node needs (offer, case, customer profile and recent timeline), and whether the higher
-- load may have opened one of the agent's pools to it (a live-load condition such as
-- assigned_tasks > 0): the caller then has the agent pull.
local function make_offer(c, a, waiting)
  local v = case_get(c, OFFER_FIELDS)
  local ch, pool, q, cust = v[OF_CH], v[OF_POOL], v[OF_Q], v[OF_CUST]
  local otm = tonumber(v[OF_OTM]) or 30000
  v[OF_ST] = 'offered'
  -- the case's offers are numbered: its last one's number, plus one (never reused); the last
  -- one's end goes to the history, which keeps its latest kilobyte or so (an answer to an
  -- offer older than that is told offer.unknown)
  local o, deadline = c .. '.1', NOW + otm
  local deadline_s = num_s(deadline)
  local last = v[OF_OFFER] and string.match(v[OF_OFFER], '%.(%d+)$')
  if last then
    o = c .. '.' .. num_s(tonumber(last) + 1)
    local oh = (v[OF_OH] or '') .. last .. ' ' .. (v[OF_OAGENT] or '-') .. ' '
      .. (v[OF_OST] or 'ended') .. '|'
    if #oh > 1000 then oh = string.sub(oh, string.find(oh, '|', #oh - 1000, true) + 1) end
    case_set(c, 'oh', oh)
  end
  case_set(c, 'st', 'offered', 'offer', o, 'oagent', a, 'ost', 'pending', 'odl', deadline_s,
    'updated', NOW_S)
  if waiting then
    redis.call('ZREM', k_pool_wait(pool, ch), c)
    redis.call('ZREM', k_queue_wait(q), c)
  end
  redis.call('SADD', k_agent_offers(a), o)
  redis.call('ZADD', k_timers(), deadline_s, 'o|' .. o)
  local pools, agent = move_load(a, ch, 1)
  local opened = false
  for i = 1, #pools, 2 do
    local conds = load_conds(pools[i])
    if conds ~= nil and load_opens(conds, ch, 1) then
      opened = true
      break
    end
  end
  log('offer.created', {'case', c, 'agent', a, 'offer', o, 'queue', q, 'ch', ch})
  local fields = {}
  for i = 1, OF_OTM - 1 do
    local f = OFFER_FIELDS[i]
    if v[i] then
      fields[#fields + 1] = f
      fields[#fields + 1] = v[i]
    end
  end
  if v[OF_CALLBACK] == '1' then
    -- why the caller is to be called back (case_transfer.lua 'cbwhy'): read for callbacks
    -- only, not looked for (a miss scans the whole case) in every offer
    local why = hget(k_case(c), 'cbwhy')
    if why then
      fields[#fields + 1] = 'cbwhy'
      fields[#fields + 1] = why
    end
  end
  -- the nodes holding the agent's consoles (agent_presence keeps the list in the agent's
  -- "nodes"; an agent last seen before it did has only its conns hash): one that holds them
  -- all needs no pub/sub relay
  local nodes
  if agent.nodes then nodes = split(agent.nodes, ',')
  else nodes = redis.call('HKEYS', k_agent_conns(a)) end
  local payload = {offer = o, agent = a, case = c, deadline = deadline, fields = fields,
    nodes = nodes}
  if cust then payload.customer = customer_payload(cust, 50) end
  return payload, opened
end

-- Whether any of pools ps has a case waiting on channel ch: one EXISTS (an empty set is no
-- key) instead of a ZRANGE per pool, for the usual freed agent whose pools have no backlog.
local function waiting_in(ps, ch)
  if #ps < 2 then return true end
  local ks = {}
  for i, p in ipairs(ps) do ks[i] = k_pool_wait(p, ch) end
  return redis.call('EXISTS', unpack(ks)) > 0
end

-- The first case in pool p's waiting set on channel ch that agent a has not refused, with its
-- priority and age; nil when there is none, or when a fails the pool's live-load conditions
-- (fit caches that answer per pool for one look).
local function pool_head(a, p, ch, fit)
  local w = k_pool_wait(p, ch)
  local start = 0
  local head = nil
  while head == nil do
    local items = redis.call('ZRANGE', w, start, start + 7)
    if #items == 0 then return nil end
    for _, c in ipairs(items) do
      if not excluded(hget(k_case(c), 'x'), a) then head = c break end
    end
    start = start + 8
  end
  local conds = load_conds(p)
  if conds ~= nil then
    if fit[p] == nil then fit[p] = load_fits(a, conds) end
    if not fit[p] then return nil end
  end
  local cs = redis.call('HMGET', k_case(head), 'pri', 'age')
  return head, tonumber(cs[1]) or 0, tonumber(cs[2]) or 0
end

-- The best waiting case across all of agent a's pools, on channels where a has free capacity.
-- Each pool offers its head (the first case a has not refused, in the pool's own order: FIFO
-- or LIFO); heads are ranked across pools by priority, then age (oldest first), then id.
-- only_ch: a's load on that channel just moved, down (dir -1 or nil: capacity freed there, so
-- every pool on that channel) or up (dir 1: after an offer). The other channels were already
-- conserving work, except for pools whose live-load conditions the move may have opened: those
-- are looked at on every channel. known: what move_load just read and wrote of a on only_ch.
local function best_case_for(a, only_ch, dir, known)
  local r, chs_s, pools
  if known then
    r, pools = known.r, {}
    for i = 1, #known.pools, 2 do pools[#pools + 1] = known.pools[i] end
  else
    local ag = redis.call('HMGET', k_agent(a), 'r', 'chs')
    r, chs_s = ag[1], ag[2]
    if r == '1' then pools = redis.call('HKEYS', k_agent_pools(a)) end
  end
  if r ~= '1' then return nil end
  local chs, opened = nil, nil
  if only_ch then
    for _, p in ipairs(pools) do
      local conds = load_conds(p)
      if conds ~= nil and load_opens(conds, only_ch, dir or -1) then
        opened = opened or {}
        opened[#opened + 1] = p
      end
    end
    if opened then chs = split(chs_s or hget(k_agent(a), 'chs'), ',') else chs = {only_ch} end
  else
    chs = split(chs_s or hget(k_agent(a), 'chs'), ',')
  end
  local best, best_pri, best_age = nil, nil, nil
  local fit = {}
  for _, ch in ipairs(chs) do
    local ps = pools
    if only_ch and (ch ~= only_ch or dir == 1) then ps = opened or {} end
    local free
    if known and ch == only_ch then free = known.cap - known.load else free = agent_free(a, ch) end
    if #ps > 0 and free > 0 and waiting_in(ps, ch) then
      for _, p in ipairs(ps) do
        local head, pri, age = pool_head(a, p, ch, fit)
        if head ~= nil and (best == nil or pri > best_pri or (pri == best_pri and (age < best_age
            or (age == best_age and head < best)))) then
          best, best_pri, best_age = head, pri, age
        end
      end
    end
  end
  return best
end

-- Give agent a as many waiting cases as its free capacity allows (work conservation). With
-- only_ch (and dir), only what that channel's load move can have changed (best_case_for);
-- known as best_case_for takes it, for the first look only.
local function pull(a, offers, only_ch, dir, known)
  for _ = 1, 64 do
    local c = best_case_for(a, only_ch, dir, known)
    known = nil
    if c == nil then return end
    local payload, opened = make_offer(c, a, true)
    offers[#offers + 1] = payload
    if opened then only_ch = nil end  -- the new load opened a pool: look everywhere
  end
end

-- Best available eligible agent for a queued case that is not in a waiting set (it is put
-- there only if nobody takes it), or nil. Longest idle first (lowest score); agents who already
-- refused this case, or who fail the pool's live-load conditions, are skipped.
local function match_case(c, offers, known)
  -- known: the case's {pool, ch, x, st} when the caller has just read or written them
  local cs = known or redis.call('HMGET', k_case(c), 'pool', 'ch', 'x', 'st')
  if cs[4] ~= 'queued' then return nil end
  local av = k_pool_av(cs[1], cs[2])
  local xs = cs[3]
  local conds = load_conds(cs[1])
  local start = 0
  while true do
    local cands = redis.call('ZRANGE', av, start, start + 7)
    if #cands == 0 then return nil end
    for _, a in ipairs(cands) do
      if not excluded(xs, a) and (conds == nil or load_fits(a, conds)) then
        local payload, opened = make_offer(c, a, false)
        offers[#offers + 1] = payload
        if opened then pull(a, offers, cs[2], 1) end
        return a
      end
    end
    start = start + 8
  end
end

-- Queueing and workflow steps --------------------------------------------------------------------

-- Put a case (status queued, fields pool/q/pri/age set) into its waiting ZSETs: its pool's
-- by rank (priority, age), its queue's by when this wait began (as the supervisor's lists and
-- longest wait read it): 'plan_start', set when it was created or reopened (its age then) or
-- handed on by an agent (case_transfer.lua), in the ages' units.
local function enqueue(c)
  local cs = case_get(c, {'pool', 'ch', 'q', 'pri', 'age', 'lifo', 'plan_start'})
  local age = tonumber(cs[5]) or 0
  local score = wait_score(tonumber(cs[4]) or 0, age, cs[6])
  redis.call('ZADD', k_pool_wait(cs[1], cs[2]), num_s(score), c)
  local since = tonumber(cs[7])
  redis.call('ZADD', k_queue_wait(cs[3]), num_s(since and (since - EPOCH_MS) or age), c)
end

local function dequeue(c)
  local cs = redis.call('HMGET', k_case(c), 'pool', 'ch', 'q')
  if cs[1] then redis.call('ZREM', k_pool_wait(cs[1], cs[2]), c) end
  if cs[3] then redis.call('ZREM', k_queue_wait(cs[3]), c) end
end

-- How many agents of pool p's available set on channel ch meet its live-load conditions,
-- counting no further than cap (an HMGET per agent looked at).
local function fitting(p, ch, conds, cap)
  local n, start = 0, 0
  while n < cap do
    local cands = redis.call('ZRANGE', k_pool_av(p, ch), start, start + 7)
    if #cands == 0 then break end
    for _, a in ipairs(cands) do
      if load_fits(a, conds) then
        n = n + 1
        if n >= cap then break end
      end
    end
    start = start + 8
  end
  return n
end

local function skip_step(step, ch)
  -- skip_if is compiled by Python to {op, n} over "workers.available" in the step's pool: its
  -- agents with free capacity on the case's channel who also meet the pool's live-load
  -- conditions, if it has any. Those are counted only up to floor(n) + 1, which decides every
  -- comparison with n.
  if step.skip == nil then return false end
  local op, v = step.skip[1], step.skip[2]
  local conds = load_conds(step.pool)
  local n
  if conds == nil then
    n = redis.call('ZCARD', k_pool_av(step.pool, ch))
  else
    n = fitting(step.pool, ch, conds, math.max(0, math.floor(v) + 1))
  end
  if op == '==' then return n == v elseif op == '!=' then return n ~= v
  elseif op == '<' then return n < v elseif op == '<=' then return n <= v
  elseif op == '>' then return n > v elseif op == '>=' then return n >= v end
  return false
end

-- Close a case that never reached an agent (workflow exhausted, caller hung up, ...).
local function end_unassigned(c, status, reason)
  case_flush()
  local ck = k_case(c)
  dequeue(c)
  redis.call('HSET', ck, 'st', status, 'reason', reason, 'closed', NOW_S, 'updated', NOW_S)
  local cq = redis.call('HMGET', ck, 'q', 'created', 'ch')
  log('case.' .. status, {'case', c, 'reason', reason, 'queue', cq[1] or '', 'ch', cq[3] or '',
    'waited', NOW - (tonumber(cq[2]) or NOW)})
end

-- Enter workflow step i (1-based) of the case's plan, keeping the case's age; steps whose
-- skip_if holds are passed over; past the last step the case is cancelled. A step's timeout
-- ("due") counts from when the plan started, as TaskRouter counts it on the task's age. The
-- fallback step (the default filter, "fb") is reached only by skipping, never by a timeout.
-- known: these fields when the caller has just written them (a new case).
-- Agent a exists and takes cases now (a routable status: not away, at lunch or signed out).
local function taking_cases(a)
  return redis.call('HGET', k_agent(a), 'r') == '1'
end

-- Whether pool p is still defined: a queue dropped from the declaration retires its pools
-- (workspace_declare.lua), and a step into one is passed over, as a step for nobody is.
local function pool_live(p)
  return redis.call('SISMEMBER', k_pools(), p) == 1
end

-- The step a case takes when its plan ran out past a step in a dropped queue: the workflow's
-- default queue, any of its agents (workspace_declare.lua keeps its id, 'dq'), at the case's
-- priority; nil when there is none.
local function default_step()
  local q = hget(k_cfg(), 'dq')
  if q == nil or not pool_live(q) then return nil end
  local lifo = hget(k_queue(q), 'order') == 'lifo' and '1' or '0'
  return {queue = q, pool = q, lifo = lifo}
end

-- passed: a step in a dropped queue was passed over already (the case's own, as it moves on)
local function enter_step(c, i, offers, by_timeout, known, passed)
  local ck = k_case(c)
  local cs = known
    or redis.call('HMGET', ck, 'plan', 'ch', 'plan_start', 'step', 'pool', 'q', 'x')
  local plan = cjson.decode(cs[1])
  local ch = cs[2]
  local start = tonumber(cs[3]) or NOW
  if by_timeout and plan[i] ~= nil and plan[i].fb then i = #plan + 1 end
  while plan[i] ~= nil do
    local s = plan[i]
    -- a step for one agent (a transfer to them, a reopened case's last agent) is skipped when
    -- they take no cases now (signed out, away, at lunch): the customer would only wait out
    -- the step for someone who is not there
    if s.agent ~= nil and s.pool == nil and taking_cases(s.agent) then
      s.pool = ensure_agent_pool(s.agent)
    end
    if s.known ~= nil and s.pool == nil then
      local a = case_get(c, {s.known})[1] or nil
      if a ~= nil and taking_cases(a) then
        s.pool = ensure_agent_pool(a)
      end
    end
    if s.pool ~= nil then
      if not pool_live(s.pool) then
        passed = true
      elseif not skip_step(s, ch) then
        break
      end
    end
    i = i + 1
  end
  local s = plan[i]
  if s == nil and passed then s = default_step() end  -- not lost with the queue
  if cs[4] then redis.call('ZREM', k_timers(), 'e|' .. c .. '|' .. cs[4]) end
  if s == nil then
    end_unassigned(c, 'cancelled', 'workflow.exhausted')
    return false
  end
  -- out of the previous step's waiting sets (a new case is in none)
  if cs[5] then redis.call('ZREM', k_pool_wait(cs[5], ch), c) end
  if cs[6] then redis.call('ZREM', k_queue_wait(cs[6]), c) end
  local fields = {'st', 'queued', 'pool', s.pool, 'q', s.queue, 'step', num_s(i), 'lifo', s.lifo or '0',
    'esc', '0', 'updated', NOW_S}
  if s.pri ~= nil then fields[#fields + 1] = 'pri'; fields[#fields + 1] = s.pri end
  case_set(c, unpack(fields))
  if s.due ~= nil then
    redis.call('ZADD', k_timers(), start + s.due, 'e|' .. c .. '|' .. i)
  end
  log('case.queued', {'case', c, 'queue', s.queue, 'step', num_s(i)})
  if match_case(c, offers, {s.pool, ch, cs[7], 'queued'}) == nil then enqueue(c) end
  return true
end

-- Return an offered case to the line after a reject/timeout/rescind, with its original age;
-- if its step timed out meanwhile, it moves on to the next step instead, as it does when the
-- step was for agent a alone (a transfer to them, a reopen's last agent), whose offer ended:
-- they refused it or stopped taking cases, and nobody else may take it in that step; and when
-- its queue was dropped meanwhile (its pool retired). set: more fields to write with the
-- status (field, value, ...).
local function requeue(c, offers, set, a)
  local ck = k_case(c)
  local cs = redis.call('HMGET', ck, 'esc', 'step', 'pool')
  redis.call('HSET', ck, 'st', 'queued', 'updated', NOW_S, unpack(set or {}))
  if cs[1] == '1' then
    return enter_step(c, (tonumber(cs[2]) or 1) + 1, offers, true)
  end
  if a and cs[3] == 'a~' .. a then
    return enter_step(c, (tonumber(cs[2]) or 1) + 1, offers, false)
  end
  if cs[3] and not pool_live(cs[3]) then
    return enter_step(c, (tonumber(cs[2]) or 1) + 1, offers, false, nil, true)
  end
  log('case.queued', {'case', c, 'requeued', '1'})
  if match_case(c, offers) == nil then enqueue(c) end
  return true
end

-- Release one unit of capacity that agent a held on channel ch.
local function release(a, ch)
  local load = redis.call('HINCRBY', k_agent(a), 'load:' .. ch, -1)
  if load < 0 then redis.call('HSET', k_agent(a), 'load:' .. ch, 0) end
  redis.call('HSET', k_agent(a), 'idle:' .. ch, NOW_S)
end

-- Agent a refused case c (rejected it, let its offer time out, or transferred it away): it is
-- not offered to them again for after_ms (routing.reoffer_refused_after_s; 0 or nil: never),
-- then it may be, if no one else has taken it meanwhile (timers_run, 'r|<case>|<agent>'): a
-- case whose only eligible agent refused it would otherwise wait for good. xs: the case's
-- refusals ('|a|b|'); returns them with a.
local function refuse(xs, c, a, after_ms)
  if after_ms and after_ms > 0 then
    redis.call('ZADD', k_timers(), num_s(NOW + after_ms), 'r|' .. c .. '|' .. a)
  end
  return (xs or '|') .. a .. '|'
end

-- End a pending offer (rejected / timeout / rescinded): the agent gets its capacity back, the
-- case goes back with its original age (or, with keep_out, is left queued but outside any
-- waiting set, for a caller that re-routes it). Returns the agent it was offered to, or false
-- if the offer was not pending (or is not the case's last offer). after_ms: how long an agent
-- who rejected or missed it stays refused (refuse).
local function end_offer(o, status, offers, keep_out, after_ms)
  local c = offer_case(o)
  if c == nil then
    -- an offer made before offers lived in their case ("o<n>", its own o:<id> hash, removed
    -- here): still pending after an upgrade, it ends like any other (its timer, going offline)
    local lk = P .. 'o:' .. o
    local lo = redis.call('HMGET', lk, 'case', 'st')
    if lo[2] ~= 'pending' then return false end
    c = lo[1]
    redis.call('DEL', lk)
    redis.call('HSET', k_case(c), 'offer', o, 'ost', 'pending')
  end
  local ck = k_case(c)
  local cs = redis.call('HMGET', ck, 'offer', 'ost', 'oagent', 'ch', 'x', 'st')
  if cs[1] ~= o or cs[2] ~= 'pending' then return false end
  local a, ch = cs[3], cs[4]
  redis.call('ZREM', k_timers(), 'o|' .. o)
  redis.call('SREM', k_agent_offers(a), o)
  -- back in (or, if no longer routable, out of) the available sets before the case looks for
  -- an agent again
  move_load(a, ch, -1)
  log('offer.' .. status, {'case', c, 'agent', a, 'offer', o})
  -- an agent who refused or missed the case is not asked again for a while
  local set = {'ost', status}
  if status ~= 'rescinded' then
    set[3] = 'x'
    set[4] = refuse(cs[5], c, a, after_ms)
  end
  if not OPEN[cs[6] or ''] then
    redis.call('HSET', ck, unpack(set))
  elseif keep_out then
    redis.call('HSET', ck, 'st', 'queued', 'updated', NOW_S, unpack(set))
  else
    requeue(c, offers, set, a)
  end
  return a
end

-- Agent a is no longer routable (a status they or a supervisor set, the away that missed offers
-- or a rejection set, their reconnect grace over, their removal): their pending offers go on to
-- the next agents now rather than ringing until their deadlines, and cases waiting for them by
-- name (a transfer to them, a reopen's last agent) move on to their next step now rather than
-- waiting out the step for someone who is not there. Returns what the agent's consoles are
-- told, one offer.rescinded frame each (reason 'unavailable').
local function rescind_all(a, offers)
  local told = {}
  for _, o in ipairs(offers_of(a)) do
    if end_offer(o, 'rescinded', offers) then
      told[#told + 1] = {type = 'offer.rescinded', offer = o, case = offer_case(o),
        reason = 'unavailable'}
    end
  end
  local own = 'a~' .. a
  for _, ch in ipairs({'chat', 'email', 'voice'}) do
    for _, c in ipairs(redis.call('ZRANGE', k_pool_wait(own, ch), 0, -1)) do
      local step = tonumber(redis.call('HGET', k_case(c), 'step')) or 0
      enter_step(c, step + 1, offers, false)
    end
  end
  return told
end

local function result(t)
  return cjson.encode(t)
end
