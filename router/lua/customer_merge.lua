-- customer_merge.lua — merge customer `from` into customer `into`: identities, cases and the
-- timeline (interleaved by time) move over; `from` is left as a tombstone pointing at `into`.
-- KEYS[1] workspace prefix
-- ARGV    now, into customer id, from customer id
-- Returns {ok, moved_cases, cases, identities} or {ok=false, error=customer.unknown|customer.same}.
local into, from = ARGV[2], ARGV[3]
if into == from then return result({ok = false, error = 'customer.same'}) end
-- neither may be a tombstone already: a merge into one would leave two records pointing at
-- each other, and the customer reachable through neither
if redis.call('EXISTS', k_customer(into)) == 0 or redis.call('EXISTS', k_customer(from)) == 0
  or hget(k_customer(from), 'merged_into') or hget(k_customer(into), 'merged_into') then
  return result({ok = false, error = 'customer.unknown'})
end
local prof = redis.call('HGETALL', k_customer(from))
local idents = {}
for i = 1, #prof, 2 do
  local f = prof[i]
  if string.sub(f, 1, 2) == 'i:' then
    local ident = string.sub(f, 3)
    redis.call('HSET', k_ids(), ident, into)
    redis.call('HSET', k_customer(into), f, '1')
    idents[#idents + 1] = ident
  elseif string.sub(f, 1, 6) == 'claim:' then
    redis.call('HSET', k_customer(into), f, '1')
  end
end
local name = hget(k_customer(from), 'name')
if name then redis.call('HSETNX', k_customer(into), 'name', name) end
local cases = redis.call('LRANGE', k_customer_cases(from), 0, -1)
for _, c in ipairs(cases) do
  redis.call('HSET', k_case(c), 'cust', into)
  redis.call('RPUSH', k_customer_cases(into), c)
end
-- interleave the two timelines by timestamp (both are already in time order)
local a = redis.call('LRANGE', k_timeline(into), 0, -1)
local b = redis.call('LRANGE', k_timeline(from), 0, -1)
local merged, i, j = {}, 1, 1
while i <= #a or j <= #b do
  local take_a
  if i > #a then take_a = false elseif j > #b then take_a = true
  else take_a = (tonumber(cjson.decode(a[i]).ts) or 0) <= (tonumber(cjson.decode(b[j]).ts) or 0)
  end
  if take_a then merged[#merged + 1] = a[i]; i = i + 1
  else merged[#merged + 1] = b[j]; j = j + 1 end
end
redis.call('DEL', k_timeline(into))
for n = 1, #merged, 1000 do
  redis.call('RPUSH', k_timeline(into), unpack(merged, n, math.min(n + 999, #merged)))
end
redis.call('DEL', k_customer(from), k_customer_cases(from), k_timeline(from))
redis.call('HSET', k_customer(from), 'id', from, 'merged_into', into, 'merged', NOW_S)
log('customer.merged', {'customer', into, 'from', from})
return result({ok = true, moved_cases = #cases, cases = cases, identities = idents})
