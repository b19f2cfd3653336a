-- Record one Stripe event atomically: dedup, counters, maxima, detector checks, subscription
-- state. Runs as one script, so the event is either fully recorded or not at all, and
-- replicas sharing this Redis never interleave half-applied events.
--
-- KEYS[1] event dedup key       KEYS[2] counters hash   KEYS[3] gauges hash
-- KEYS[4] anomaly log list      KEYS[5] subscription hash (or an unused name)
-- KEYS[6] lapse watch zset      KEYS[7] recent-events log list   KEYS[7 + i] the key of check i
-- ARGV[1] the plan as JSON (every number a string, so Lua never rounds it)
-- ARGV[2] how many anomaly records the log keeps
-- ARGV[3] the event's log line, a JSON object without its closing brace ('' for none): the
--         script appends its result and the detectors that hit, so Python's numbers pass as written
-- ARGV[4] how many lines the recent-events log keeps
-- ARGV[1] 'probe' instead: returns {3} and touches nothing (the readiness probe).
-- Returns {1} for an event recorded before (only its log line written), {2, reason} for one it
-- refuses (nothing written), else {0, anomaly record JSON...}.
--
-- Redis does not roll back a script that fails half-way, so nothing after the first write may
-- fail: values are validated in Python when the plan is built, and everything that could still
-- fail here (a total leaving the 64-bit range, a TTL EXPIRE refuses, sizes) is checked below
-- before the first write. store/memory_store.py makes the same checks.
--
-- The script knows no metric vocabulary: the plan names every field it moves. A subscription
-- snapshot says whether it is held in the gauges (held), the gauge fields it then adds to (sf:
-- 1, mf: its MRR) and the counter its end bumps (se). The subscription hash keeps the fields
-- the kept snapshot added (sf, mf, mrr; '' when it held nothing) to take them back later.

-- Totals stay within +-9 * 10^18 (store/contract.py COUNTER_LIMIT), inside the signed 64-bit range.
-- Lua numbers are doubles, exact only to 2^53, so totals are compared exactly as two parts,
-- value = hi * BASE + lo with 0 <= lo < BASE.
local BASE = 1e9
local LIMIT_HI = 9e9
local MAX_TTL = 1e10 -- seconds (store/contract.py MAX_TTL)
local MAX_CHECKS = 1000 -- store/contract.py MAX_CHECKS
-- The readiness probe (RedisStore.can_record): that this script runs here is the answer.
if ARGV[1] == 'probe' then return { 3 } end
local MAX_AMOUNT, MAX_SUM = 1e12, 1e15 -- store/contract.py: a sum check's amount and threshold
local plan = cjson.decode(ARGV[1])

-- ---------------------------------------------------------------- checks, before any write
local function refusal()
  if #plan.checks ~= #KEYS - 7 or #plan.checks > MAX_CHECKS then
    return 'too many checks in one event'
  end
  local ttls = { plan.ttl }
  for _, check in ipairs(plan.checks) do table.insert(ttls, check.ttl) end
  if plan.subscription then table.insert(ttls, plan.subscription.ttl) end
  if plan.payment then table.insert(ttls, plan.payment.ttl) end
  for _, ttl in ipairs(ttls) do
    local t = tonumber(ttl)
    if not t or t < 1 or t > MAX_TTL or t % 1 ~= 0 then
      return 'a retention (TTL) is out of range'
    end
  end
  for _, check in ipairs(plan.checks) do
    if check.op == 'sum' then
      local amount, threshold = tonumber(check.amount), tonumber(check.threshold)
      if not amount or amount < 0 or amount > MAX_AMOUNT or amount % 1 ~= 0
        or not threshold or threshold < 0 or threshold > MAX_SUM or threshold % 1 ~= 0 then
        return "a sum check's amount or threshold is out of range"
      end
    end
  end
  local function parts(text, negate)
    local sign, digits = tostring(text):match('^(-?)(%d+)$')
    if not digits or #digits > 19 then return nil end
    local hi = #digits > 9 and tonumber(digits:sub(1, #digits - 9)) or 0
    local lo = tonumber(digits:sub(-9))
    if (sign == '-') ~= (negate == true) then hi, lo = -hi, -lo end
    local carry = math.floor(lo / BASE)
    return { hi + carry, lo - carry * BASE }
  end
  local function plus(a, b)
    local lo = a[2] + b[2]
    local carry = math.floor(lo / BASE)
    return { a[1] + b[1] + carry, lo - carry * BASE }
  end
  -- Every increment a field may get, split in its positive and negative parts, so the range
  -- holds whichever checks hit and in whatever order they apply.
  local deltas = { {}, {} } -- KEYS[2] counters, KEYS[3] gauges
  local bad = false
  local function add(h, name, value, negate)
    local v = parts(value, negate)
    if not v then bad = true return end
    local d = deltas[h][name]
    if not d then d = { { 0, 0 }, { 0, 0 } } deltas[h][name] = d end
    if v[1] >= 0 then d[1] = plus(d[1], v) else d[2] = plus(d[2], v) end
  end
  for name, value in pairs(plan.counters) do add(1, name, value) end
  for _, check in ipairs(plan.checks) do
    for name, value in pairs(check.counters) do add(1, name, value) end
    if check.anomaly then add(1, check.anomaly_counter, '1') end
  end
  local sub = plan.subscription
  if sub then
    local state = redis.call('HMGET', KEYS[5], 'sf', 'mf', 'mrr')
    if state[1] and state[1] ~= '' then add(2, state[1], '-1') end
    if state[2] and state[2] ~= '' then add(2, state[2], state[3], true) end
    if sub.held then
      add(2, sub.sf, '1')
      if sub.mf ~= '' then add(2, sub.mf, sub.mrr) end
    elseif sub.se ~= '' then
      add(1, sub.se, '1')
    end
  end
  if bad then
    return 'an increment is not an integer'
  end
  for h = 1, 2 do
    for name, d in pairs(deltas[h]) do
      local current = parts(redis.call('HGET', KEYS[h + 1], name) or '0')
      local high, low = plus(current, d[1]), plus(current, d[2])
      if high[1] > LIMIT_HI or (high[1] == LIMIT_HI and high[2] > 0) or low[1] < -LIMIT_HI then
        return 'total ' .. name .. ' would leave the range a 64-bit counter can hold'
      end
    end
  end
  return nil
end

-- The event's line in the recent-events log, capped. LPUSH and LTRIM on a list cannot fail, so
-- this write may follow the checks (or stand alone for a duplicate).
local function log_line(result, detectors)
  if ARGV[3] == '' then return end
  local names = #detectors > 0 and cjson.encode(detectors) or '[]' -- cjson writes {} for an empty table
  redis.call('LPUSH', KEYS[7], ARGV[3] .. ',"result":"' .. result .. '","anomalies":' .. names .. '}')
  redis.call('LTRIM', KEYS[7], 0, tonumber(ARGV[4]) - 1)
end

-- A redelivery of a recorded event stays a duplicate, whatever the totals are now: it changes
-- nothing but the recent-events log.
if redis.call('EXISTS', KEYS[1]) == 1 then
  log_line('duplicate', {})
  return { 1 }
end
local reason = refusal()
if reason then
  return { 2, reason }
end

-- ---------------------------------------------------------------- writes
redis.call('SET', KEYS[1], '1', 'EX', plan.ttl)

for name, value in pairs(plan.counters) do
  redis.call('HINCRBY', KEYS[2], name, value)
end
for name, value in pairs(plan.maxima) do
  local current = tonumber(redis.call('HGET', KEYS[3], name))
  if not current or tonumber(value) > current then
    redis.call('HSET', KEYS[3], name, value)
  end
end

-- The sum op (recording/plan.py Check): members are '<id>|<amount>'. The largest total of a
-- window-long span holding `at` starts at at - window, at `at`, or at a member's time between.
local function sum_check(key, check)
  local member = check.member .. '|' .. check.amount
  if redis.call('ZSCORE', key, member) then
    return false, nil
  end
  local at, window = tonumber(check.at), tonumber(check.window)
  local starts = { at - window, at }
  local near = redis.call('ZRANGEBYSCORE', key, at - window, at, 'WITHSCORES')
  for j = 2, #near, 2 do table.insert(starts, tonumber(near[j])) end
  local best, best_members = -1, {}
  for _, start in ipairs(starts) do
    local inside = redis.call('ZRANGEBYSCORE', key, start, start + window)
    local total, ids = 0, {}
    for _, m in ipairs(inside) do
      local id, amount = m:match('^(.*)|(%d+)$')
      total = total + tonumber(amount)
      table.insert(ids, id)
    end
    if total > best then best, best_members = total, ids end
  end
  redis.call('ZADD', key, check.at, member)
  local size = redis.call('ZCARD', key)
  if size > tonumber(check.cap) then
    redis.call('ZREMRANGEBYRANK', key, 0, size - tonumber(check.cap) - 1)
  end
  redis.call('EXPIRE', key, check.ttl)
  local threshold = tonumber(check.threshold)
  -- No related ids: absent, as in the memory store (cjson would encode an empty table as {}).
  return best < threshold and threshold <= best + tonumber(check.amount), #best_members > 0 and best_members or nil
end

local result = { 0 }
local fired = {} -- the detectors that hit, for the log line
for i, check in ipairs(plan.checks) do
  local key = KEYS[7 + i]
  local hit, related = false, nil
  if check.op == 'once' then
    hit = redis.call('SET', key, '1', 'NX', 'EX', check.ttl) and true or false
  elseif check.op == 'sum' then
    hit, related = sum_check(key, check)
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
      table.insert(fired, check.anomaly.detector)
    end
  end
end

local sub = plan.subscription
if sub then
  local state = redis.call('HMGET', KEYS[5], 'at', 'sf', 'mf', 'mrr', 'paid')
  local at = tonumber(state[1])
  if not at or tonumber(sub.at) >= at then -- an older snapshot never overwrites a newer one
    local ended_before = at and state[2] == '' -- a kept snapshot that held nothing
    if state[2] and state[2] ~= '' then
      redis.call('HINCRBY', KEYS[3], state[2], -1)
    end
    if state[3] and state[3] ~= '' then
      -- format with %d: Lua would print minus zero as '-0', which HINCRBY refuses
      redis.call('HINCRBY', KEYS[3], state[3], string.format('%d', -tonumber(state[4])))
    end
    local sf, mf = '', ''
    if sub.held then
      sf, mf = sub.sf, sub.mf
      redis.call('HINCRBY', KEYS[3], sf, 1)
      if mf ~= '' then
        redis.call('HINCRBY', KEYS[3], mf, sub.mrr)
      end
    elseif sub.se ~= '' and not ended_before then
      redis.call('HINCRBY', KEYS[2], sub.se, 1) -- '' for history: an imported end is not live traffic
    end
    redis.call('HSET', KEYS[5], 'at', sub.at, 'sf', sf, 'mf', mf, 'mrr', sub.mrr, 'end', sub['end'])
    redis.call('EXPIRE', KEYS[5], sub.ttl)
    local paid = tonumber(state[5]) or 0
    local period_end = tonumber(sub['end'])
    if sub.watch and period_end > 0 and paid < period_end then
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

log_line('accepted', fired)
return result
