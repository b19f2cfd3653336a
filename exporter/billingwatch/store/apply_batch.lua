-- Record a batch of Stripe events in one script call (RedisStore.apply_many, docs/redis.md).
-- Each event is recorded exactly as apply.lua records it, in order, each seeing the writes of
-- those before it (dedup keys, checks, subscription state); what differs is only how: counter
-- and gauge increments and maxima are summed over the batch and written once at the end, and
-- each log gets one LPUSH (+ LTRIM) for the whole batch. A duplicate or a refusal affects its
-- own event only.
--
-- KEYS[1] counters hash  KEYS[2] gauges hash  KEYS[3] anomaly log  KEYS[4] recent-events log
-- KEYS[5] the layout version  KEYS[6] the overflow flag
-- then per event, in order (store/batch_args.py): its dedup key; with a subscription snapshot or
-- payment its subscription hash, the lapse watch zset and its customer hash; a key per check.
-- ARGV[1] how many anomaly records the log keeps  ARGV[2] how many lines the events log keeps
-- ARGV[3] the number of events, then each event's ARGV slice (store/batch_args.py).
--
-- Returns {9, version} for a store whose layout is newer than this script's (nothing written);
-- else {0, reply per event...}, each reply what apply.lua returns for the event ({0, anomaly
-- record JSON...}, {1}, {2, reason}), or {8}: not recorded here (nothing of it written), run
-- the exact per-event script (apply.lua) for this event; every event after a {8} is {8} too;
-- or {7, error}: a command failed at this event (a key of another type), which stopped the batch
-- there; the events before it are recorded.
--
-- Totals without per-field reads: this release's scripts keep every stored total's absolute
-- value below 2^62, or else set the overflow flag (KEYS[6]) when an increment makes one reach
-- it. With the flag clear, a batch whose increments sum to at most BUDGET in absolute value
-- cannot take a total past COUNTER_LIMIT (store/contract.py): 2^62 + 4.3e18 < 9e18. Before an
-- event's first write, its largest possible increments (every check's counters, hit or not,
-- and its subscription change as read) are added to what the batch spent; an event that would
-- overspend, any event once the flag is set, and an increment that is no integer of at most 15
-- digits are left to apply.lua ({8}), which checks each field exactly. Everything else apply.lua
-- checks before writing (TTL range, sizes, MRR ranges) is checked here per event, before that
-- event's first write, with apply.lua's reasons.
local LAYOUT = 2
local layout = redis.call('GET', KEYS[5])
if layout and not (tostring(layout):match('^%d+$') and tonumber(layout) <= LAYOUT) then
  return { 9, layout }
end
local MAX_TTL = 1e10 -- store/contract.py MAX_TTL
local MAX_CHECKS = 1000 -- store/contract.py MAX_CHECKS
local MAX_AMOUNT, MAX_SUM = 1e12, 1e15 -- store/contract.py: a sum check's amount and threshold
local MAX_SUBSCRIPTION_MRR, MAX_CUSTOMER_MRR = 1e15, 9e15
local BUDGET = 4.3e18
local FLAG_AT = 2 ^ 62
local EXACT = 2 ^ 53 -- Lua's doubles hold integers exactly below it

-- ---------------------------------------------------------------- parse, before any write
-- A malformed call (an encoder's bug) is an error here, before anything is written.
local A = ARGV
local n_events = tonumber(A[3])
local ai, ki = 4, 7 -- the next ARGV and KEYS index
local function take() local v = A[ai] ai = ai + 1 return v end
local function key() local v = KEYS[ki] ki = ki + 1 return v end
local function pairs_list()
  local n, out = tonumber(take()), {}
  for j = 1, n do out[j] = { take(), take() } end
  return out
end
local events = {}
for e = 1, n_events do
  local ev = { flags = take() }
  ev.ttl, ev.line = take(), take()
  ev.counters, ev.maxima = pairs_list(), pairs_list()
  ev.rq = ev.flags:find('R', 1, true) ~= nil
  ev.dedup = key()
  local has_sub, has_pay = ev.flags:find('S', 1, true), ev.flags:find('P', 1, true)
  if has_sub or has_pay then ev.skey, ev.lkey, ev.ckey = key(), key(), key() end
  ev.checks = {}
  for j = 1, tonumber(take()) do
    local c = { key = key(), op = take(), ttl = take(), member = take(), at = take(), window = take(),
                cap = take(), amount = take(), threshold = take(), gap_detail = take() }
    c.counters, c.anomaly, c.anomaly_counter = pairs_list(), take(), take()
    ev.checks[j] = c
  end
  if has_sub then
    local s = { id = take(), at = take(), rank = take(), held = take() == '1' }
    s.g = pairs_list()
    s.cur, s.cm, s.pay, s['end'], s.ttl, s.ctl, s.se = take(), take(), take(), take(), take(), take(), take()
    s.watch = take() == '1'
    local mv1, mv2 = take(), take()
    if mv1 ~= '' then s.mv = { mv1, mv2 } end
    ev.sub = s
  end
  if has_pay then ev.pay = { id = take(), at = take(), ttl = take() } end
  events[e] = ev
end
if ai ~= #A + 1 or ki ~= #KEYS + 1 then
  return redis.error_reply('apply_batch: the arguments do not match their counts (nothing written)')
end

-- ---------------------------------------------------------------- shared helpers (as apply.lua)
local function movement(before, after, paid_before)
  if before == after then return nil end
  if before <= 0 then return paid_before and 'reactivation' or 'new', after end
  if after <= 0 then return 'churn', before end
  if after > before then return 'expansion', after - before end
  return 'contraction', before - after
end

local function fill(scheme, currency, kind)
  return (scheme:gsub('{kind}', kind or ''):gsub('{currency}', currency))
end

-- What replacing the kept subscription snapshot changes (apply.lua subscription_change).
local function subscription_change(skey, ckey, sub)
  local raw = redis.call('HGETALL', skey)
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
      local state = redis.call('HMGET', ckey, 'm:' .. currency, 'p:' .. currency)
      local before = tonumber(state[1]) or 0
      local after = math.max(before + deltas[currency], 0)
      table.insert(change.customer, { 'm:' .. currency, after })
      if after > 0 then table.insert(change.customer, { 'p:' .. currency, 1 }) end
      if (before > 0) ~= (after > 0) then
        table.insert(change.gauges, { fill(sub.pay, currency), after > 0 and 1 or -1 })
      end
      local kind, amount = movement(before, after, state[2] == '1')
      if kind and sub.mv then
        table.insert(change.counters, { fill(sub.mv[1], currency, kind), amount })
        table.insert(change.counters, { fill(sub.mv[2], currency, kind), 1 })
      end
    end
  end
  return change
end

-- apply.lua refusal() without the totals' range (the batch's budget stands for it): a reason,
-- or nil.
local function refusal(ev, change)
  if #ev.checks > MAX_CHECKS then return 'too many checks in one event' end
  local ttls = { ev.ttl }
  for _, c in ipairs(ev.checks) do table.insert(ttls, c.ttl) end
  if ev.sub then
    table.insert(ttls, ev.sub.ttl)
    table.insert(ttls, ev.sub.ctl)
  end
  if ev.pay then table.insert(ttls, ev.pay.ttl) end
  for _, ttl in ipairs(ttls) do
    local t = tonumber(ttl)
    if not t or t < 1 or t > MAX_TTL or t % 1 ~= 0 then
      return 'a retention (TTL) is out of range'
    end
  end
  for _, c in ipairs(ev.checks) do
    if c.op == 'sum' then
      local amount, threshold = tonumber(c.amount), tonumber(c.threshold)
      if not amount or amount < 0 or amount > MAX_AMOUNT or amount % 1 ~= 0
        or not threshold or threshold < 0 or threshold > MAX_SUM or threshold % 1 ~= 0 then
        return "a sum check's amount or threshold is out of range"
      end
    end
  end
  if change then
    for _, c in ipairs(change.customer) do
      if c[2] > MAX_CUSTOMER_MRR then return "a customer's mrr would leave the range the store computes exactly" end
    end
  end
  return nil
end

-- The most this event can move the totals, in absolute value, or nil when an increment is no
-- integer of at most 15 digits (apply.lua then decides).
local function cost(ev, change)
  local total = 0
  local function add(text)
    local digits = tostring(text):match('^-?(%d+)$')
    if not digits or #digits > 15 then return false end
    total = total + tonumber(digits)
    return true
  end
  for _, p in ipairs(ev.counters) do if not add(p[2]) then return nil end end
  for _, c in ipairs(ev.checks) do
    for _, p in ipairs(c.counters) do if not add(p[2]) then return nil end end
    if c.anomaly ~= '' then total = total + 1 end
  end
  if change then
    for _, g in ipairs(change.gauges) do total = total + math.abs(g[2]) end
    for _, c in ipairs(change.counters) do total = total + math.abs(c[2]) end
  end
  return total
end

-- ---------------------------------------------------------------- the batch's summed writes
local sums = { {}, {} } -- KEYS[1] counters, KEYS[2] gauges: field -> summed increment
local maxima, maxima_order = {}, {} -- gauge field -> { number, text }
local flagged = false
local function write_total(h, name, amount)
  local total = redis.call('HINCRBY', KEYS[h], name, string.format('%d', amount)) -- %d: never '-0'
  if not flagged and math.abs(total) >= FLAG_AT then
    redis.call('SET', KEYS[6], '1')
    flagged = true
  end
end
-- Sums stay exact in doubles: one that would reach 2^53 is written out first (it cannot
-- overflow: the budget bounds every partial sum too).
local function add_total(h, name, amount)
  local t = sums[h]
  local sum = (t[name] or 0) + amount
  if math.abs(sum) >= EXACT then
    write_total(h, name, amount)
  else
    t[name] = sum
  end
end

local anomaly_records, log_lines = {}, {}
local function log_line(ev, result, detectors)
  if ev.line == '' then return end
  local names = #detectors > 0 and cjson.encode(detectors) or '[]' -- cjson writes {} for an empty table
  table.insert(log_lines, ev.line .. ',"result":"' .. result .. '","anomalies":' .. names .. '}')
end

-- Keep the newest `cap` members: what apply.lua's ZCARD and ZREMRANGEBYRANK do, in one call.
local function trim(key, cap)
  redis.call('ZREMRANGEBYRANK', key, 0, string.format('%d', -tonumber(cap) - 1))
end

-- The sum op (apply.lua sum_check).
local function sum_check(c)
  local key = c.key
  local member = c.member .. '|' .. c.amount
  if redis.call('ZSCORE', key, member) then
    return false, nil
  end
  local at, window = tonumber(c.at), tonumber(c.window)
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
  redis.call('ZADD', key, c.at, member)
  trim(key, c.cap)
  redis.call('EXPIRE', key, c.ttl)
  local threshold = tonumber(c.threshold)
  return best < threshold and threshold <= best + tonumber(c.amount), #best_members > 0 and best_members or nil
end

local function holds_money(k)
  local raw = redis.call('HGETALL', k)
  for i = 1, #raw, 2 do
    local prefix = raw[i]:sub(1, 2)
    if (prefix == 'g:' or prefix == 'm:') and (tonumber(raw[i + 1]) or 0) > 0 then return true end
  end
  return false
end
local function keep(k, ttl)
  if holds_money(k) then redis.call('PERSIST', k) else redis.call('EXPIRE', k, ttl) end
end

-- One event's writes, after its checks passed (apply.lua from its dedup SET on).
local function record(ev, change, dedup_set)
  if not dedup_set then redis.call('SET', ev.dedup, '1', 'EX', ev.ttl) end
  for _, p in ipairs(ev.counters) do add_total(1, p[1], tonumber(p[2])) end
  for _, p in ipairs(ev.maxima) do
    local value = tonumber(p[2])
    local best = maxima[p[1]]
    if not best then
      table.insert(maxima_order, p[1])
      maxima[p[1]] = { value, p[2] }
    elseif value > best[1] then
      maxima[p[1]] = { value, p[2] }
    end
  end
  local reply, fired = { 0 }, {}
  for _, c in ipairs(ev.checks) do
    local k = c.key
    local hit, related, gap = false, nil, nil
    if c.op == 'once' then
      hit = redis.call('SET', k, '1', 'NX', 'EX', c.ttl) and true or false
    elseif c.op == 'sum' then
      hit, related = sum_check(c)
    else
      local score = redis.call('ZSCORE', k, c.member)
      if not score then
        if c.op == 'window' then
          local at, window = tonumber(c.at), tonumber(c.window)
          local near = redis.call('ZRANGEBYSCORE', k, string.format('%d', at - window),
            string.format('%d', at + window), 'WITHSCORES')
          related = {}
          for j = 1, #near, 2 do
            table.insert(related, near[j])
            local apart = math.abs(at - tonumber(near[j + 1]))
            if not gap or apart < gap then gap = apart end
          end
        else
          related = redis.call('ZRANGE', k, 0, -1)
        end
        hit = #related > 0
        redis.call('ZADD', k, c.at, c.member)
        if c.op == 'window' then
          trim(k, c.cap)
        elseif #related + 1 > tonumber(c.cap) then -- distinct: related was the whole set
          redis.call('ZREMRANGEBYRANK', k, 0, #related - tonumber(c.cap))
        end
        redis.call('EXPIRE', k, c.ttl)
      elseif c.op == 'distinct' and tonumber(c.at) < tonumber(score) then
        redis.call('ZADD', k, c.at, c.member)
      end
    end
    if hit then
      for _, p in ipairs(c.counters) do add_total(1, p[1], tonumber(p[2])) end
      if c.anomaly ~= '' then
        -- Decoded only when it hits, and encoded as apply.lua encodes it: the same record text.
        local anomaly = cjson.decode(c.anomaly)
        anomaly.related = related
        if gap and c.gap_detail ~= '' then
          local gap_text = '"' .. c.gap_detail .. '":' .. string.format('%d', gap)
          local details = anomaly.details
          if type(details) ~= 'string' or details == 'null' or details == '{}' then
            anomaly.details = '{' .. gap_text .. '}'
          else
            anomaly.details = '{' .. gap_text .. ',' .. details:sub(2)
          end
        end
        local text = cjson.encode(anomaly)
        table.insert(anomaly_records, text)
        add_total(1, c.anomaly_counter, 1)
        table.insert(reply, text)
        table.insert(fired, anomaly.detector)
      end
    end
  end

  local sub = ev.sub
  if sub and change then -- nil: an older snapshot never overwrites a newer one
    for _, g in ipairs(change.gauges) do add_total(2, g[1], g[2]) end
    for _, c in ipairs(change.counters) do add_total(1, c[1], c[2]) end
    for _, c in ipairs(change.customer) do
      redis.call('HSET', ev.ckey, c[1], string.format('%d', c[2]))
    end
    keep(ev.ckey, sub.ctl)
    if #change.drop > 0 then redis.call('HDEL', ev.skey, unpack(change.drop)) end
    local fields = { 'at', sub.at, 'rk', sub.rank, 'cur', sub.cur, 'cm', sub.cm, 'end', sub['end'] }
    if sub.held then
      for _, g in ipairs(sub.g) do
        table.insert(fields, 'g:' .. g[1])
        table.insert(fields, g[2])
      end
    end
    redis.call('HSET', ev.skey, unpack(fields))
    keep(ev.skey, sub.ttl)
    local paid = tonumber(redis.call('HGET', ev.skey, 'paid')) or 0
    local period_end = tonumber(sub['end'])
    if sub.watch and period_end > 0 and paid < period_end then
      redis.call('ZADD', ev.lkey, sub['end'], sub.id)
    else
      redis.call('ZREM', ev.lkey, sub.id)
    end
  end

  local pay = ev.pay
  if pay then
    local paid = tonumber(redis.call('HGET', ev.skey, 'paid'))
    if not paid or tonumber(pay.at) > paid then
      redis.call('HSET', ev.skey, 'paid', pay.at)
      if holds_money(ev.skey) then
        redis.call('PERSIST', ev.skey)
      elseif redis.call('TTL', ev.skey) < tonumber(pay.ttl) then
        redis.call('EXPIRE', ev.skey, pay.ttl)
      end
      local watched = tonumber(redis.call('ZSCORE', ev.lkey, pay.id))
      if watched and watched <= tonumber(pay.at) then
        redis.call('ZREM', ev.lkey, pay.id)
      end
    end
  end
  log_line(ev, 'accepted', fired)
  return reply
end

-- ---------------------------------------------------------------- each event, in order
-- The batch's own writes come last: their keys must take them (apply.lua reads the totals first,
-- so a key of another type fails it before any write too).
local SHARED_TYPES = { 'hash', 'hash', 'list', 'list' }
for h = 1, 4 do
  local kind = redis.call('TYPE', KEYS[h]).ok
  if kind ~= 'none' and kind ~= SHARED_TYPES[h] then
    return redis.error_reply('WRONGTYPE ' .. KEYS[h] .. ' holds a ' .. kind .. ' (nothing written)')
  end
end
local out = { 0 }
local spent = 0
local exact_from = redis.call('EXISTS', KEYS[6]) == 1 and 1 or nil -- flag set: apply.lua for all
local failed = nil -- the error that stopped the batch at an event (a key of another type)
local function duplicate(ev)
  log_line(ev, 'duplicate', {})
  table.insert(out, { 1 })
end
-- An event without a subscription snapshot: its refusals need no read, so its dedup key is
-- read and set in one SET NX once they passed (apply.lua's order of answers kept).
local function apply_plain_event(ev, e)
  local reason = refusal(ev, nil)
  if reason then
    local seen = redis.call('GET', ev.dedup)
    if seen and not (seen == 'q' and ev.rq) then duplicate(ev) else table.insert(out, { 2, reason }) end
    return
  end
  local moves = cost(ev, nil)
  if not moves or spent + moves > BUDGET then
    exact_from = e
    return
  end
  if not redis.call('SET', ev.dedup, '1', 'NX', 'EX', ev.ttl) then
    if not (ev.rq and redis.call('GET', ev.dedup) == 'q') then
      duplicate(ev)
      return
    end
    redis.call('SET', ev.dedup, '1', 'EX', ev.ttl) -- a requeued quarantined event: recorded now
  end
  spent = spent + moves
  table.insert(out, record(ev, nil, true))
end
local function apply_event(ev, e)
  if not ev.sub then return apply_plain_event(ev, e) end
  local seen = redis.call('GET', ev.dedup)
  if seen and not (seen == 'q' and ev.rq) then
    duplicate(ev)
  else
    local reason, change = nil, nil
    if ev.sub then
      local amounts = { ev.sub.cm }
      for _, g in ipairs(ev.sub.g) do table.insert(amounts, g[2]) end
      for _, a in ipairs(amounts) do
        local v = tostring(a):match('^%d+$') and tonumber(a)
        if not v or v > MAX_SUBSCRIPTION_MRR then reason = "a subscription's mrr is out of range" break end
      end
      if not reason then change = subscription_change(ev.skey, ev.ckey, ev.sub) end
    end
    reason = reason or refusal(ev, change)
    if reason then
      table.insert(out, { 2, reason })
    else
      local moves = cost(ev, change)
      if not moves or spent + moves > BUDGET then
        exact_from = e
      else
        spent = spent + moves
        table.insert(out, record(ev, change))
      end
    end
  end
end
-- An event's command that fails (only a key of another type can) stops the batch there, as it
-- would stop apply.lua for that event; the events before it are complete: their sums and log
-- lines are still written below. It and the rest get {7, error}: not recorded here.
for e = 1, n_events do
  if exact_from then break end
  local ok, err = pcall(apply_event, events[e], e)
  if not ok then
    failed = type(err) == 'table' and err.err or tostring(err)
    for _ = #out, n_events do table.insert(out, { 7, failed }) end
    break
  end
end
if exact_from then
  for _ = exact_from, n_events do table.insert(out, { 8 }) end
end

for h = 1, 2 do
  for name, amount in pairs(sums[h]) do
    write_total(h, name, amount) -- 0 too: apply.lua's HINCRBY creates the field
  end
end
for _, name in ipairs(maxima_order) do
  local best = maxima[name]
  local current = tonumber(redis.call('HGET', KEYS[2], name))
  if not current or best[1] > current then
    redis.call('HSET', KEYS[2], name, best[2])
  end
end
local function push(k, items, cap)
  for j = 1, #items, 4000 do -- unpack() is bounded by Lua's stack
    redis.call('LPUSH', k, unpack(items, j, math.min(j + 3999, #items)))
  end
  redis.call('LTRIM', k, 0, tonumber(cap) - 1)
end
if #anomaly_records > 0 then push(KEYS[3], anomaly_records, A[1]) end
if #log_lines > 0 then push(KEYS[4], log_lines, A[2]) end
return out
