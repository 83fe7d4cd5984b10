-- case_delivered.lua — a reply its adapter has handed on (the channel's bridge answered
-- "delivered", the mail server accepted it): its entry in the customer's timeline gets
-- "delivered" (when, seconds) and "via" (who confirmed it), so every view of the history shows
-- it, once. It never routes; router/switch.py reply_delivered tells the case's agent.
-- KEYS[1] workspace prefix
-- ARGV    1 now  2 case id  3 customer id (as the outbox entry names it)  4 the reply's entry
--         id  5 via ('email', 'bridge:<id>')
-- The entry is looked for in the timeline of the case's customer now: a merge since the reply
-- was sent (an admin's, or a chat visitor who gave a known email) moved it there.
-- Returns {ok, updated, agent, ts} — updated false when it was marked already — or
-- {ok=false, error='entry.unknown'} when the entry is not among the customer's latest 200
-- (too old to matter).
local c, id = ARGV[2], ARGV[4]
local cs = redis.call('HMGET', k_case(c), 'cust', 'agent')
local u, agent = cs[1] or ARGV[3], cs[2] or ''
local SCAN = 200  -- the customer's latest entries looked through: a reply is confirmed soon
local tl = k_timeline(u)
local n = redis.call('LLEN', tl)
local from = math.max(0, n - SCAN)
local entries = redis.call('LRANGE', tl, from, -1)
local needle = '"id":' .. cjson.encode(id)
for i = #entries, 1, -1 do
  local raw = entries[i]
  if string.find(raw, needle, 1, true) and string.find(raw, '"dir":"out"', 1, true) then
    if string.find(raw, '"delivered":', 1, true) then
      return result({ok = true, updated = false, agent = agent})
    end
    -- spliced in, not decoded and encoded again (which would turn an empty list among the
    -- entry's fields into an object)
    local ts = NOW / 1000
    local marked = string.sub(raw, 1, -2) .. ',"delivered":' .. cjson.encode(ts) ..
      ',"via":' .. cjson.encode(ARGV[5]) .. '}'
    redis.call('LSET', tl, from + i - 1, marked)
    log('case.reply_delivered', {'case', c, 'entry', id, 'via', ARGV[5]})
    return result({ok = true, updated = true, agent = agent, ts = ts})
  end
end
return result({ok = false, error = 'entry.unknown'})
