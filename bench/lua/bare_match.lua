-- bare_match.lua: the bare pipeline's stand-in for a routing match (bench/bare.py).
-- Comparable in Redis work to a real match: pop the least-loaded agent, record the offer,
-- put the agent back with one more offer on its score.
--
-- KEYS[1]  agents zset: member = agent id, score = offers made to that agent so far
-- KEYS[2]  offers hash: case id -> agent id
-- ARGV[1]  case id
--
-- Returns the chosen agent id, or false when no agent is connected.
local popped = redis.call('ZPOPMIN', KEYS[1])
if #popped == 0 then
  return false
end
local agent, score = popped[1], tonumber(popped[2])
redis.call('HSET', KEYS[2], ARGV[1], agent)
redis.call('ZADD', KEYS[1], score + 1, agent)
return agent
