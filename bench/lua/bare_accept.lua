-- bare_accept.lua: the bare pipeline's stand-in for accepting an offer (bench/bare.py).
-- Claims the offer only if it is still this agent's, and counts the case done.
--
-- KEYS[1]  offers hash: case id -> agent id
-- KEYS[2]  done counter: cases accepted so far (read by the load generator)
-- ARGV[1]  case id
-- ARGV[2]  agent id
--
-- Returns the done count after this accept, or 0 when the offer is not (or no longer) this
-- agent's.
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
return redis.call('INCR', KEYS[2])
