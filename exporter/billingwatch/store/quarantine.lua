-- The quarantine (recording/quarantine.py): keep a signed event we could not record, with its
-- dedup key, in one atomic step; or release one that requeue recorded. memory_store.py does the same.
--
-- KEYS[1] event dedup key   KEYS[2] counters hash   KEYS[3] gauges hash
-- KEYS[4] quarantine hash (member -> entry JSON, without its body)
-- KEYS[5] quarantine order zset (member -> received ms)   KEYS[6] recent-events log list
-- KEYS[7] bodies hash (member -> the body as signed: apart, so listing entries never reads them)
-- KEYS[8] the layout version (store/layout.py): a newer layout gets {9, version}, nothing written
-- ARGV[1] 'add' or 'release'   ARGV[2] the member ('<livemode>:<event id>')
-- ARGV[3] the gauge field scheme of the entries ({livemode} to fill)
-- add: ARGV[4] dedup TTL   ARGV[5] entry JSON   ARGV[6] received ms (the order)   ARGV[7] cap
--      ARGV[8] the quarantined counter field   ARGV[9] the dropped counter field scheme
--      ARGV[10] the log line without its closing brace   ARGV[11] how many lines the log keeps
-- Returns {1} for a duplicate (a recorded or quarantined id: only its log line written),
-- {2, reason} for a refusal (nothing written), {0, dropped} when kept; release returns {0, removed}.
--
-- Nothing after the first write can fail: the TTL and cap are checked first, and the counters
-- moved by one each stay far from the 64-bit range (checked too).

local LAYOUT = 2 -- as apply.lua
local layout = redis.call('GET', KEYS[8])
if layout and not (tostring(layout):match('^%d+$') and tonumber(layout) <= LAYOUT) then
  return { 9, layout }
end

local function mode_of(member) return member:match('^(%a+):') end
local function fill(scheme, member) return (scheme:gsub('{livemode}', mode_of(member))) end

if ARGV[1] == 'release' then
  local removed = redis.call('HDEL', KEYS[4], ARGV[2])
  redis.call('HDEL', KEYS[7], ARGV[2])
  redis.call('ZREM', KEYS[5], ARGV[2])
  if removed == 1 then redis.call('HINCRBY', KEYS[3], fill(ARGV[3], ARGV[2]), -1) end
  return { 0, removed }
end

local function log_line(result)
  if ARGV[10] == '' then return end
  redis.call('LPUSH', KEYS[6], ARGV[10] .. ',"result":"' .. result .. '","anomalies":[]}')
  redis.call('LTRIM', KEYS[6], 0, tonumber(ARGV[11]) - 1)
end

-- Its dedup key (recorded, or quarantined and not yet expired) or its entry: a redelivery.
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('HEXISTS', KEYS[4], ARGV[2]) == 1 then
  log_line('duplicate')
  return { 1 }
end
local ttl, cap, order = tonumber(ARGV[4]), tonumber(ARGV[7]), tonumber(ARGV[6])
if not ttl or ttl < 1 or ttl > 1e10 or ttl % 1 ~= 0 then return { 2, 'a retention (TTL) is out of range' } end
if not cap or cap < 1 or cap % 1 ~= 0 then return { 2, 'the quarantine size is out of range' } end
if not order then return { 2, 'the received time is not a number' } end
for _, name in ipairs({ ARGV[8], fill(ARGV[9], ARGV[2]) }) do
  local current = tonumber(redis.call('HGET', KEYS[2], name) or '0')
  if not current or current > 8e18 then return { 2, 'total ' .. name .. ' would leave the range a 64-bit counter can hold' } end
end

-- ---------------------------------------------------------------- writes
redis.call('SET', KEYS[1], 'q', 'EX', ttl)
redis.call('HSET', KEYS[4], ARGV[2], ARGV[5])
redis.call('HSET', KEYS[7], ARGV[2], ARGV[12])
redis.call('ZADD', KEYS[5], order, ARGV[2])
redis.call('HINCRBY', KEYS[3], fill(ARGV[3], ARGV[2]), 1)
redis.call('HINCRBY', KEYS[2], ARGV[8], 1)
-- The cap: the oldest go first, each counted.
local dropped = 0
local size = redis.call('ZCARD', KEYS[5])
if size > cap then
  local oldest = redis.call('ZPOPMIN', KEYS[5], size - cap)
  for i = 1, #oldest, 2 do
    redis.call('HDEL', KEYS[4], oldest[i])
    redis.call('HDEL', KEYS[7], oldest[i])
    redis.call('HINCRBY', KEYS[3], fill(ARGV[3], oldest[i]), -1)
    redis.call('HINCRBY', KEYS[2], fill(ARGV[9], oldest[i]), 1)
    dropped = dropped + 1
  end
end
log_line('quarantined')
return { 0, dropped }
