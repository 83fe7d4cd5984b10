-- agents_read.lua — a chunk of agents as a supervisors' snapshot shows them (router/stats.py),
-- and the cases they are offered or hold, by state. Writes nothing.
-- It reads in Redis what took three commands per agent and one per case through the protocol
-- (a thousand agents holding 2,600 cases: ~5,700 replies for the node to parse, each handled
-- in Python) and returns one JSON text per chunk, which the node parses in C.
-- KEYS[1] workspace prefix
-- ARGV    now, with_attrs ('1': each agent's attributes as stored, for the staffing), agent ids
-- Returns {agents = [view...], attrs = {id = JSON text} (with_attrs), cases = [[created, case,
-- state]...]}: an agent's view as router/snapshot.py agent_view (attributes=False) builds it;
-- a case offered (by one of the agents' offers) or assigned or wrapping (in one of their case
-- sets), each as read now: a case that moved on is left out. An agent with no hash is left out.
-- An empty list is encoded as {} (Redis's cjson): the caller reads it as none.
local with_attrs = ARGV[2] == '1'
local CHANNELS = {'chat', 'email', 'voice'}  -- router/ingest.py CHANNELS
-- the fields a view is made of: the agent's, each channel's capacity, load and idle moment
-- (fields 4 + 3j, 5 + 3j, 6 + 3j for the j-th channel), then, if asked for, the attributes
local FIELDS = {'id', 'name', 'role', 'st', 'chs', 'idle'}
for _, ch in ipairs(CHANNELS) do
  FIELDS[#FIELDS + 1] = 'cap:' .. ch
  FIELDS[#FIELDS + 1] = 'load:' .. ch
  FIELDS[#FIELDS + 1] = 'idle:' .. ch
end
local ATTRS = #FIELDS + 1
if with_attrs then FIELDS[ATTRS] = 'attrs' end
local agents, attrs, cases = {}, {}, {}
for i = 3, #ARGV do
  local a = ARGV[i]
  local v = redis.call('HMGET', k_agent(a), unpack(FIELDS))
  if v[1] then
    local chs = ',' .. (v[5] or '') .. ','
    local capacity, load = {}, {}
    local idle = tonumber(v[6]) or 0
    for j, ch in ipairs(CHANNELS) do
      if string.find(chs, ',' .. ch .. ',', 1, true) then
        capacity[ch] = tonumber(v[4 + 3 * j]) or 0
        load[ch] = tonumber(v[5 + 3 * j]) or 0
        local t = tonumber(v[6 + 3 * j]) or 0
        if t > idle then idle = t end
      end
    end
    agents[#agents + 1] = {
      id = v[1], name = v[2] or '', role = v[3] or 'agent', status = v[4] or 'offline',
      capacity = capacity, load = load, idle_since = idle,
    }
    if with_attrs then attrs[v[1]] = v[ATTRS] or '' end
    for _, o in ipairs(redis.call('SMEMBERS', k_agent_offers(a))) do
      local c = offer_case(o)
      if c then
        local s = redis.call('HMGET', k_case(c), 'st', 'created')
        if s[1] == 'offered' then cases[#cases + 1] = {tonumber(s[2]) or 0, c, 'offered'} end
      end
    end
    for _, c in ipairs(redis.call('SMEMBERS', k_agent_cases(a))) do
      local s = redis.call('HMGET', k_case(c), 'st', 'created')
      if s[1] == 'assigned' or s[1] == 'wrapping' then
        cases[#cases + 1] = {tonumber(s[2]) or 0, c, s[1]}
      end
    end
  end
end
return result({agents = agents, attrs = attrs, cases = cases})
