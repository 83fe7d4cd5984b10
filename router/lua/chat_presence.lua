-- chat_presence.lua — a chat widget opened or closed a case, or a dead node's widgets are reaped.
-- Widgets are counted on the case (its 'wv') and per node (node:<n>:widgets, field
-- "<case>|<visitor>"), so that a node that dies with widgets open (kill -9) can be reaped by any
-- other node. When a case's last widget is gone, a timer is armed (timers_run "v|"): whichever
-- node fires it after the grace tells the agent holding the case that the visitor left, or has
-- an unanswered chat abandoned. A widget that opens the case again before then keeps it quiet.
-- A node that was taken for dead while alive and reaped says again what it holds ('restore').
-- KEYS[1] workspace prefix
-- ARGV    now, 'arrive'|'depart'|'reap'|'restore', node id, grace ms, case id, visitor id
--         (reap: only the node and the grace; restore: JSON [[case, visitor, count], ...])
-- Returns {ok, widgets, back}: back = the agent to tell the visitor is back (arrive, when they
-- had been told the visitor left), else ''.
local action, node, grace = ARGV[2], ARGV[3], tonumber(ARGV[4])
local nk = k_node_widgets(node)

-- the case's count down by n; its last widget gone: look again after the grace
local function leave(c, visitor, n)
  local left = redis.call('HINCRBY', k_case(c), 'wv', -n)
  if left <= 0 then
    redis.call('ZADD', k_timers(), num_s(NOW + grace), 'v|' .. c .. '|' .. visitor)
  end
  return left
end

if action == 'reap' then
  local held = redis.call('HGETALL', nk)
  for i = 1, #held, 2 do
    local n = tonumber(held[i + 1]) or 0
    if n > 0 then
      local parts = split(held[i], '|')
      leave(parts[1], parts[2], n)
    end
  end
  redis.call('DEL', nk)
  return result({ok = true, widgets = #held / 2, back = ''})
end

if action == 'restore' then  -- only what the reap took: a widget still counted stays as it is
  local n = 0
  for _, w in ipairs(cjson.decode(ARGV[5])) do
    local f = w[1] .. '|' .. w[2]
    if redis.call('HEXISTS', nk, f) == 0 and redis.call('EXISTS', k_case(w[1])) == 1 then
      redis.call('HSET', nk, f, w[3])
      redis.call('HINCRBY', k_case(w[1]), 'wv', w[3])
      n = n + 1
    end
  end
  return result({ok = true, widgets = n, back = ''})
end

local c, visitor = ARGV[5], ARGV[6]
local ck, f = k_case(c), c .. '|' .. visitor
if action == 'arrive' then
  if redis.call('EXISTS', ck) == 0 then return result({ok = false, error = 'case.unknown'}) end
  redis.call('HINCRBY', nk, f, 1)
  local n = redis.call('HINCRBY', ck, 'wv', 1)
  local back = ''
  if redis.call('HDEL', ck, 'vleft') == 1 then
    local cs = redis.call('HMGET', ck, 'st', 'agent')
    if (cs[1] == 'assigned' or cs[1] == 'wrapping') and cs[2] then back = cs[2] end
  end
  return result({ok = true, widgets = n, back = back})
end

-- depart. Below zero: this node was taken for dead and its widgets reaped already.
local mine = redis.call('HINCRBY', nk, f, -1)
if mine <= 0 then redis.call('HDEL', nk, f) end
if mine < 0 then return result({ok = true, widgets = tonumber(hget(ck, 'wv')) or 0, back = ''}) end
return result({ok = true, widgets = leave(c, visitor, 1), back = ''})
