-- One anomaly's verdict from the /anomalies feedback buttons, with its counter, atomically.
-- KEYS[1] verdicts hash (anomaly id -> record JSON)   KEYS[2] counters hash   KEYS[3] layout version
-- ARGV[1] anomaly id   ARGV[2] verdict   ARGV[3] record JSON   ARGV[4] counter field   ARGV[5] cap
-- Everything is checked before the first write. Reply: {0, previous verdict or ''} when it was
-- stored (the counter moved), {1, verdict} when the anomaly already had it (nothing written),
-- {2, ''} when the hash holds `cap` anomalies and this one is new (nothing written), {9, version}
-- when the store's layout is newer than this release's (store/layout.py; nothing written).
local LAYOUT = 2 -- as apply.lua
local layout = redis.call('GET', KEYS[3])
if layout and not (tostring(layout):match('^%d+$') and tonumber(layout) <= LAYOUT) then
  return { 9, layout }
end
local old = redis.call('HGET', KEYS[1], ARGV[1])
local previous = ''
if old then
  previous = cjson.decode(old).verdict
  if previous == ARGV[2] then return {1, previous} end
elseif redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[5]) then
  return {2, ''}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
redis.call('HINCRBY', KEYS[2], ARGV[4], 1)
return {0, previous}
