-- Record one Stripe event atomically: dedup, counters, maxima, detector checks, subscription
-- state. Runs as one script, so the event is either fully recorded or not at all, and
-- replicas sharing this Redis never interleave half-applied events.
--
-- KEYS[1] event dedup key       KEYS[2] counters hash   KEYS[3] gauges hash
-- KEYS[4] anomaly log list      KEYS[5] subscription hash (or an unused name)
-- KEYS[6] lapse watch zset      KEYS[7] recent-events log list
-- KEYS[8] the subscription's customer hash (or an unused name)   KEYS[9] the layout version
-- KEYS[10] the overflow flag: set when an increment makes a total's absolute value reach 2^62
-- (apply_batch.lua relies on it to bound totals without reading them)
-- KEYS[10 + i] the key of check i
-- ARGV[1] the plan as JSON (every number a string, so Lua never rounds it)
-- ARGV[2] how many anomaly records the log keeps
-- ARGV[3] the event's log line, a JSON object without its closing brace ('' for none): the
--         script appends its result and the detectors that hit, so Python's numbers pass as written
-- ARGV[4] how many lines the recent-events log keeps
-- ARGV[1] 'probe' instead: returns {3} and touches nothing (the readiness probe).
-- Returns {9, version} for a store whose layout is newer than this script's (nothing written).
-- Returns {1} for an event recorded before (only its log line written), {2, reason} for one it
-- refuses (nothing written), else {0, anomaly record JSON...}.
--
-- Redis does not roll back a script that fails half-way, so nothing after the first write may
-- fail: values are validated in Python when the plan is built, and everything that could still
-- fail here (a total leaving the 64-bit range, a TTL EXPIRE refuses, sizes) is checked below
-- before the first write. store/memory_store.py makes the same checks.
--
-- The script knows no metric vocabulary: the plan names every field it moves. A subscription
-- snapshot says whether it is held in the gauges (held), the gauge fields it then adds to (g:
-- [field, amount] pairs), the counter its end bumps (se), its MRR in its currency (cur, cm), and
-- the schemes of the paying-customers gauge (pay) and movement counters (mv: [amount, customers];
-- absent for history), with {currency} and {kind} to fill in. The subscription hash keeps what
-- the kept snapshot added (at, rk, cur, cm, and 'g:<field>' = amount per gauge field; no 'g:'
-- field: it held nothing) to take it back later. The customer hash keeps the customer's MRR
-- ('m:<currency>') and whether it ever paid ('p:<currency>'), per currency: movements follow
-- from the stored previous state (recording/plan.py movement(), docs/revenue.md).

-- Totals stay within +-9 * 10^18 (store/contract.py COUNTER_LIMIT), inside the signed 64-bit range.
-- Lua numbers are doubles, exact only to 2^53, so totals are compared exactly as two parts,
-- value = hi * BASE + lo with 0 <= lo < BASE.
local BASE = 1e9
local LIMIT_HI = 9e9
local MAX_TTL = 1e10 -- seconds (store/contract.py MAX_TTL)
local MAX_CHECKS = 1000 -- store/contract.py MAX_CHECKS
-- The readiness probe (RedisStore.can_record): that this script runs here is the answer.
if ARGV[1] == 'probe' then return { 3 } end
-- The store's layout (store/layout.py, docs/redis.md): none is 1 (the release at 886d805, which
-- this script reads and corrects as it goes); a newer one is another release's shape, and this
-- script writes nothing into it.
local LAYOUT = 2
local layout = redis.call('GET', KEYS[9])
if layout and not (tostring(layout):match('^%d+$') and tonumber(layout) <= LAYOUT) then
  return { 9, layout }
end
local MAX_AMOUNT, MAX_SUM = 1e12, 1e15 -- store/contract.py: a sum check's amount and threshold
-- store/contract.py MAX_SUBSCRIPTION_MRR, MAX_CUSTOMER_MRR: below 2^53, so exact in Lua's doubles
local MAX_SUBSCRIPTION_MRR, MAX_CUSTOMER_MRR = 1e15, 9e15
local plan = cjson.decode(ARGV[1])
local CHECK_KEYS = 10 -- the checks' keys follow the fixed ones

-- The movement rule (recording/plan.py movement()): kind and positive amount, or nil.
local function movement(before, after, paid_before)
  if before == after then return nil end
  if before <= 0 then return paid_before and 'reactivation' or 'new', after end
  if after <= 0 then return 'churn', before end
  if after > before then return 'expansion', after - before end
  return 'contraction', before - after
end

-- A field scheme of the plan filled in (recording/plan.py fill()); label values never hold '%'.
local function fill(scheme, currency, kind)
  return (scheme:gsub('{kind}', kind or ''):gsub('{currency}', currency))
end

-- What replacing the kept subscription snapshot changes, read before any write (memory_store.py
-- _change): nil when the snapshot is older than the kept one (superseded). Amounts are numbers,
-- exact (below 2^53); written with %d.
local function subscription_change(sub)
  local raw = redis.call('HGETALL', KEYS[5])
  local s, held = {}, {}
  for i = 1, #raw, 2 do
    if raw[i]:sub(1, 2) == 'g:' then table.insert(held, { raw[i]:sub(3), tonumber(raw[i + 1]) })
    else s[raw[i]] = raw[i + 1] end
  end
  local at = tonumber(s.at)
  if at then
    local t, rank = tonumber(sub.at), tonumber(sub.rank)
    if t < at or (t == at and rank < (tonumber(s.rk) or 0)) then return nil end
  end
  local change = { gauges = {}, counters = {}, customer = {}, drop = {}, ended_before = at ~= nil and #held == 0 }
  for _, g in ipairs(held) do
    table.insert(change.gauges, { g[1], -g[2] })
    table.insert(change.drop, 'g:' .. g[1])
  end
  if sub.held then
    for _, g in ipairs(sub.g) do table.insert(change.gauges, { g[1], tonumber(g[2]) }) end
  elseif sub.se ~= '' and not change.ended_before then
    table.insert(change.counters, { sub.se, 1 })
  end
  -- The customer's MRR per currency: the kept snapshot's share out, this one's in.
  local deltas, order = {}, {}
  local kept = tonumber(s.cm) or 0
  if kept > 0 then
    deltas[s.cur] = -kept
    table.insert(order, s.cur)
  end
  if sub.cur ~= '' then
    if not deltas[sub.cur] then table.insert(order, sub.cur) end
    deltas[sub.cur] = (deltas[sub.cur] or 0) + tonumber(sub.cm)
  end
  for _, currency in ipairs(order) do
    if deltas[currency] ~= 0 then
      local state = redis.call('HMGET', KEYS[8], 'm:' .. currency, 'p:' .. currency)
      local before = tonumber(state[1]) or 0
      local after = math.max(before + deltas[currency], 0)
      table.insert(change.customer, { 'm:' .. currency, after })
      if after > 0 then table.insert(change.customer, { 'p:' .. currency, 1 }) end
      if (before > 0) ~= (after > 0) then
        table.insert(change.gauges, { fill(sub.pay, currency), after > 0 and 1 or -1 })
      end
      local kind, amount = movement(before, after, state[2] == '1')
      if kind and sub.mv then -- no scheme for history: it moves no movement counter
        table.insert(change.counters, { fill(sub.mv[1], currency, kind), amount })
        table.insert(change.counters, { fill(sub.mv[2], currency, kind), 1 })
      end
    end
  end
  return change
end

-- ---------------------------------------------------------------- checks, before any write
local function refusal(change)
  if #plan.checks ~= #KEYS - CHECK_KEYS or #plan.checks > MAX_CHECKS then
    return 'too many checks in one event'
  end
  local ttls = { plan.ttl }
  for _, check in ipairs(plan.checks) do table.insert(ttls, check.ttl) end
  if plan.subscription then
    table.insert(ttls, plan.subscription.ttl)
    table.insert(ttls, plan.subscription.ctl)
  end
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
  if change then
    for _, g in ipairs(change.gauges) do add(2, g[1], string.format('%d', g[2])) end
    for _, c in ipairs(change.counters) do add(1, c[1], string.format('%d', c[2])) end
    for _, c in ipairs(change.customer) do
      if c[2] > MAX_CUSTOMER_MRR then return "a customer's mrr would leave the range the store computes exactly" end
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
-- nothing but the recent-events log. A quarantined event's key holds 'q' (quarantine.lua): only
-- its requeue (plan.rq) records it, once, and the SET below makes it '1'.
local seen = redis.call('GET', KEYS[1])
if seen and not (seen == 'q' and plan.rq) then
  log_line('duplicate', {})
  return { 1 }
end
-- A subscription's amounts first: the change is computed from them in doubles.
local sub_change = nil
if plan.subscription then
  local amounts = { plan.subscription.cm }
  for _, g in ipairs(plan.subscription.g) do table.insert(amounts, g[2]) end
  for _, a in ipairs(amounts) do
    local v = tostring(a):match('^%d+$') and tonumber(a)
    if not v or v > MAX_SUBSCRIPTION_MRR then return { 2, "a subscription's mrr is out of range" } end
  end
  sub_change = subscription_change(plan.subscription)
end
local reason = refusal(sub_change)
if reason then
  return { 2, reason }
end

-- ---------------------------------------------------------------- writes
-- Every increment of a total: the overflow flag (KEYS[10]) is set once one reaches 2^62.
local FLAG_AT = 2 ^ 62
local function increment(key, name, value)
  if math.abs(redis.call('HINCRBY', key, name, value)) >= FLAG_AT then redis.call('SET', KEYS[10], '1') end
end

redis.call('SET', KEYS[1], '1', 'EX', plan.ttl)

for name, value in pairs(plan.counters) do
  increment(KEYS[2], name, value)
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
  local key = KEYS[CHECK_KEYS + i]
  local hit, related, gap = false, nil, nil
  if check.op == 'once' then
    hit = redis.call('SET', key, '1', 'NX', 'EX', check.ttl) and true or false
  elseif check.op == 'sum' then
    hit, related = sum_check(key, check)
  else
    local score = redis.call('ZSCORE', key, check.member)
    if not score then
      if check.op == 'window' then
        local near = redis.call('ZRANGEBYSCORE', key, check.lo, check.hi, 'WITHSCORES')
        related = {}
        for j = 1, #near, 2 do
          table.insert(related, near[j])
          local apart = math.abs(tonumber(check.at) - tonumber(near[j + 1]))
          if not gap or apart < gap then gap = apart end
        end
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
      increment(KEYS[2], name, value)
    end
    if check.anomaly then
      check.anomaly.related = related
      if gap and check.gap_detail ~= '' then
        -- details crosses Lua as a JSON object's text (redis_store._stringify): the gap joins it
        -- as text too, so cjson never rounds the detector's numbers. Times are below 2^53: exact.
        local gap_text = '"' .. check.gap_detail .. '":' .. string.format('%d', gap)
        local details = check.anomaly.details
        if type(details) ~= 'string' or details == 'null' or details == '{}' then
          check.anomaly.details = '{' .. gap_text .. '}'
        else
          check.anomaly.details = '{' .. gap_text .. ',' .. details:sub(2)
        end
      end
      local record = cjson.encode(check.anomaly)
      redis.call('LPUSH', KEYS[4], record)
      redis.call('LTRIM', KEYS[4], 0, tonumber(ARGV[2]) - 1)
      increment(KEYS[2], check.anomaly_counter, 1)
      table.insert(result, record)
      table.insert(fired, check.anomaly.detector)
    end
  end
end

-- Whether a subscription hash is held in the gauges ('g:' fields) or a customer hash holds MRR
-- ('m:<currency>' > 0): then it has no TTL (layout 2), else `ttl` from now.
local function holds_money(key)
  local raw = redis.call('HGETALL', key)
  for i = 1, #raw, 2 do
    local prefix = raw[i]:sub(1, 2)
    if (prefix == 'g:' or prefix == 'm:') and (tonumber(raw[i + 1]) or 0) > 0 then return true end
  end
  return false
end
local function keep(key, ttl)
  if holds_money(key) then redis.call('PERSIST', key) else redis.call('EXPIRE', key, ttl) end
end

local sub = plan.subscription
if sub and sub_change then -- nil: an older snapshot never overwrites a newer one
  for _, g in ipairs(sub_change.gauges) do
    increment(KEYS[3], g[1], string.format('%d', g[2])) -- %d: never '-0', which HINCRBY refuses
  end
  for _, c in ipairs(sub_change.counters) do -- no end or movement counter for history
    increment(KEYS[2], c[1], string.format('%d', c[2]))
  end
  for _, c in ipairs(sub_change.customer) do
    redis.call('HSET', KEYS[8], c[1], string.format('%d', c[2]))
  end
  -- Layout 2: state that holds money never expires (a 3-year plan sends no event for 3 years);
  -- the rest is kept from its last change. Applied on every write, so a key an 886d805 replica
  -- gave a TTL during a rolling update is corrected when this release next touches it.
  keep(KEYS[8], sub.ctl)
  -- The gauge fields it holds, one hash field each ('g:<field>'): short values keep the hash a
  -- compact listpack.
  if #sub_change.drop > 0 then redis.call('HDEL', KEYS[5], unpack(sub_change.drop)) end
  local fields = { 'at', sub.at, 'rk', sub.rank, 'cur', sub.cur, 'cm', sub.cm, 'end', sub['end'] }
  if sub.held then
    for _, g in ipairs(sub.g) do
      table.insert(fields, 'g:' .. g[1])
      table.insert(fields, g[2])
    end
  end
  redis.call('HSET', KEYS[5], unpack(fields))
  keep(KEYS[5], sub.ttl)
  local paid = tonumber(redis.call('HGET', KEYS[5], 'paid')) or 0
  local period_end = tonumber(sub['end'])
  if sub.watch and period_end > 0 and paid < period_end then
    redis.call('ZADD', KEYS[6], sub['end'], sub.id)
  else
    redis.call('ZREM', KEYS[6], sub.id)
  end
end

local pay = plan.payment
if pay then
  local paid = tonumber(redis.call('HGET', KEYS[5], 'paid'))
  if not paid or tonumber(pay.at) > paid then
    redis.call('HSET', KEYS[5], 'paid', pay.at)
    if holds_money(KEYS[5]) then
      redis.call('PERSIST', KEYS[5])
    elseif redis.call('TTL', KEYS[5]) < tonumber(pay.ttl) then
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
