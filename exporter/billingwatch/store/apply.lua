-- Record one Stripe event atomically: dedup, counters, maxima, detector checks, subscription
-- state. Runs as one script, so the event is either fully recorded or not at all, and
-- replicas sharing this Redis never interleave half-applied events.
--
-- KEYS[1] event dedup key       KEYS[2] counters hash   KEYS[3] gauges hash
-- KEYS[4] anomaly log list      KEYS[5] subscription hash (or an unused name)
-- KEYS[6] lapse watch zset      KEYS[6 + i] the key of check i
-- ARGV[1] the plan as JSON (every number a string, so Lua never rounds it)
-- ARGV[2] how many anomaly records the log keeps
-- Returns {1} for an event recorded before, else {0, anomaly record JSON...}.
--
-- Redis does not roll back a script that fails half-way, so nothing here may fail: every
-- value is validated (types, ranges) in Python before the plan is built.

local ENDED = { canceled = true, incomplete_expired = true }
local plan = cjson.decode(ARGV[1])

if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', plan.ttl) then
  return { 1 }
end

for name, value in pairs(plan.counters) do
  redis.call('HINCRBY', KEYS[2], name, value)
end
for name, value in pairs(plan.maxima) do
  local current = tonumber(redis.call('HGET', KEYS[3], name))
  if not current or tonumber(value) > current then
    redis.call('HSET', KEYS[3], name, value)
  end
end

local result = { 0 }
for i, check in ipairs(plan.checks) do
  local key = KEYS[6 + i]
  local hit, related = false, nil
  if check.op == 'once' then
    hit = redis.call('SET', key, '1', 'NX', 'EX', check.ttl) and true or false
  else
    local score = redis.call('ZSCORE', key, check.member)
    if not score then
      if check.op == 'window' then
        related = redis.call('ZRANGEBYSCORE', key, check.lo, check.hi)
      else
        related = redis.call('ZRANGE', key, 0, -1)
      end
      hit = #related > 0
      redis.call('ZADD', key, check.at, check.member)
      local size = redis.call('ZCARD', key)
      if size > tonumber(check.cap) then
        redis.call('ZREMRANGEBYRANK', key, 0, size - tonumber(check.cap) - 1)
      end
      redis.call('EXPIRE', key, check.ttl)
    elseif check.op == 'distinct' and tonumber(check.at) < tonumber(score) then
      redis.call('ZADD', key, check.at, check.member) -- keep when each member was first seen
    end
  end
  if hit then
    for name, value in pairs(check.counters) do
      redis.call('HINCRBY', KEYS[2], name, value)
    end
    if check.anomaly then
      check.anomaly.related = related
      local record = cjson.encode(check.anomaly)
      redis.call('LPUSH', KEYS[4], record)
      redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[2]) - 1)
      redis.call('HINCRBY', KEYS[2], check.anomaly_counter, 1)
      table.insert(result, record)
    end
  end
end

local sub = plan.subscription
if sub then
  local state = redis.call('HMGET', KEYS[5], 'at', 'status', 'cur', 'mrr', 'paid', 'lm')
  local at = tonumber(state[1])
  if not at or tonumber(sub.at) >= at then -- an older snapshot never overwrites a newer one
    local old_status, old_mode = state[2], state[6]
    if old_status and not ENDED[old_status] then
      redis.call('HINCRBY', KEYS[3], 'sub|' .. old_status .. '|' .. old_mode, -1)
      if state[3] and state[3] ~= '' then
        -- format with %d: Lua would print minus zero as '-0', which HINCRBY refuses
        redis.call('HINCRBY', KEYS[3], 'mrr|' .. state[3] .. '|' .. old_mode, string.format('%d', -tonumber(state[4])))
      end
    end
    if not ENDED[sub.status] then
      redis.call('HINCRBY', KEYS[3], 'sub|' .. sub.status .. '|' .. sub.lm, 1)
      if sub.cur ~= '' then
        redis.call('HINCRBY', KEYS[3], 'mrr|' .. sub.cur .. '|' .. sub.lm, sub.mrr)
      end
    elseif sub.se ~= '' and not (old_status and ENDED[old_status]) then
      redis.call('HINCRBY', KEYS[2], sub.se, 1) -- '' for history: an imported end is not live traffic
    end
    redis.call('HSET', KEYS[5], 'at', sub.at, 'status', sub.status, 'cur', sub.cur, 'mrr', sub.mrr,
      'end', sub['end'], 'lm', sub.lm)
    redis.call('EXPIRE', KEYS[5], sub.ttl)
    local paid = tonumber(state[5]) or 0
    local period_end = tonumber(sub['end'])
    if sub.status == 'active' and period_end > 0 and paid < period_end then
      redis.call('ZADD', KEYS[6], sub['end'], sub.id)
    else
      redis.call('ZREM', KEYS[6], sub.id)
    end
  end
end

local pay = plan.payment
if pay then
  local paid = tonumber(redis.call('HGET', KEYS[5], 'paid'))
  if not paid or tonumber(pay.at) > paid then
    redis.call('HSET', KEYS[5], 'paid', pay.at)
    if redis.call('TTL', KEYS[5]) < tonumber(pay.ttl) then
      redis.call('EXPIRE', KEYS[5], pay.ttl)
    end
    local watched = tonumber(redis.call('ZSCORE', KEYS[6], pay.id))
    if watched and watched <= tonumber(pay.at) then
      redis.call('ZREM', KEYS[6], pay.id)
    end
  end
end

return result
