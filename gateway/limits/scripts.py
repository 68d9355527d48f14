"""The shared limiter's Lua scripts: each runs atomically inside Redis, so a decision made by
one replica is never interleaved with another's. Pure text; `redis.py` loads them once and calls
them by SHA.

Keys (all under one prefix with a hash tag, so they share a slot): `spent:<period>` and
`reserved:<period>` (hashes: scope field -> nano-dollars; `spent` carries `#seeded` once rebuilt
from the ledger), `eu:<period>` (the end users counted), `running` (member -> requests in
flight), `reserved_total`, `bucket:<member>` (token buckets), `leases` (request id -> expiry,
a sorted set) with `lease:<id>` (what the request holds), and `settled:<id>` (settled once).
Money is in integer nano-dollars; every argument comes as one JSON document.
"""

from __future__ import annotations

COMMON = """
local a = cjson.decode(ARGV[1])
local P = a.p
-- Redis reads an integer argument strictly: '%.0f' writes a negated $0 as '-0', which
-- HINCRBY refuses, so zero is written as '0'.
local function int(x) if x == 0 then return '0' end return string.format('%.0f', x) end
local function num(x) return tonumber(x) or 0 end

-- A request's lease ends (settled, or expired): what it reserved and its slot are given back.
local function give_back(id)
  local lease = P .. 'lease:' .. id
  local held = redis.call('HMGET', lease, 'm', 'c', 'h')
  if held[1] then
    local cost = num(held[2])
    for _, hold in ipairs(cjson.decode(held[3])) do
      redis.call('HINCRBY', P .. 'reserved:' .. hold[1], hold[2], int(-cost))
    end
    redis.call('HINCRBY', P .. 'running', held[1], -1)
    redis.call('INCRBY', P .. 'reserved_total', int(-cost))
    redis.call('DEL', lease)
  end
  redis.call('ZREM', P .. 'leases', id)
end

-- Leases that expired (their replica died or stopped renewing).
local function reap(now)
  local expired = redis.call('ZRANGEBYSCORE', P .. 'leases', '-inf', now, 'LIMIT', 0, 100)
  for _, id in ipairs(expired) do give_back(id) end
end
"""

ADMIT = (
    COMMON
    + """
local now, cost = a.now, a.cost
reap(now)
-- Asked again (the first answer was lost on the way): admitted already, reserve nothing more.
local again = redis.call('HGET', P .. 'lease:' .. a.id, 'h')
if again then return {'ok', again, false} end
-- Ended already: a decision given up on, whose release overtook it on the way.
if redis.call('EXISTS', P .. 'settled:' .. a.id) == 1 then return {'gone'} end
if #a.budgets > 0 then
  for _, period in ipairs(a.periods) do
    if redis.call('HEXISTS', P .. 'spent:' .. period.k, '#seeded') == 0 then
      return {'seed', period.k}
    end
  end
end

-- The end user's own counter, or the shared one once max are counted in the period.
local eu = {}
if a.eu then
  for i, period in ipairs(a.periods) do
    local set = P .. 'eu:' .. period.k
    if redis.call('SISMEMBER', set, a.eu.own) == 1 or redis.call('SCARD', set) < a.eu.max then
      eu[i] = a.eu.own
    else
      eu[i] = a.eu.over
    end
  end
end
local function field(i, f) if f == '@eu' then return eu[i] end return f end

-- Money first (budgets, then the balance floor), as the in-process limiter checks.
local least = nil
for n, b in ipairs(a.budgets) do
  local f = field(b[1], b[2])
  local k = a.periods[b[1]].k
  local spent = num(redis.call('HGET', P .. 'spent:' .. k, f))
  local reserved = num(redis.call('HGET', P .. 'reserved:' .. k, f))
  local left = b[3] - spent - reserved - cost
  if least == nil or left < least then least = left end
  if left < 0 and cost > 0 then return {'budget', n, int(spent), int(reserved), f} end
end
local total = num(redis.call('GET', P .. 'reserved_total'))
if cost > 0 and a.floor and a.balance and a.balance - total - cost < a.floor then
  return {'floor', int(total)}
end

local running = num(redis.call('HGET', P .. 'running', a.m))
if a.conc and running >= a.conc then return {'concurrency', running} end

local bucket = P .. 'bucket:' .. a.m
local levels = {}
for _, rate in ipairs(a.rates) do  -- {kind, limit, needed}
  local kind, limit, needed = rate[1], rate[2], rate[3]
  if limit == 0 or needed > limit then return {'rate', kind, 'never'} end
  local stored = redis.call('HMGET', bucket, kind, kind .. '@')
  local level = limit
  if stored[1] then
    level = math.min(limit, tonumber(stored[1]) + math.max(now - tonumber(stored[2]), 0) * limit / 60)
  end
  if level < needed then return {'rate', kind, tostring(level)} end
  levels[kind] = level - needed
end

-- Every check passed: reserve everything.
for kind, level in pairs(levels) do
  redis.call('HSET', bucket, kind, tostring(level), kind .. '@', tostring(now))
end
if #a.rates > 0 then redis.call('EXPIRE', bucket, 120) end
local holds = {}
for i, period in ipairs(a.periods) do
  local fields = {'m:' .. a.m, 't'}
  if a.eu then
    table.insert(fields, eu[i])
    redis.call('SADD', P .. 'eu:' .. period.k, eu[i])
    redis.call('EXPIREAT', P .. 'eu:' .. period.k, period.expires)
  end
  local reserved = P .. 'reserved:' .. period.k
  for _, f in ipairs(fields) do
    redis.call('HINCRBY', reserved, f, int(cost))
    table.insert(holds, {period.k, f})
  end
  redis.call('EXPIREAT', reserved, period.expires)
end
redis.call('HINCRBY', P .. 'running', a.m, 1)
redis.call('INCRBY', P .. 'reserved_total', int(cost))
local lease = P .. 'lease:' .. a.id
local encoded = cjson.encode(holds)
redis.call('HSET', lease, 'm', a.m, 'c', int(cost), 'h', encoded)
redis.call('EXPIRE', lease, 86400)
redis.call('ZADD', P .. 'leases', now + a.ttl, a.id)
local out = {'ok', encoded, least and int(least) or false}
for _, rate in ipairs(a.rates) do
  table.insert(out, rate[1])
  table.insert(out, tostring(levels[rate[1]]))
end
return out
"""
)

SETTLE = (
    COMMON
    + """
if not redis.call('SET', P .. 'settled:' .. a.id, 1, 'NX', 'EX', 172800) then return 0 end
give_back(a.id)  -- if it did not expire meanwhile
if a.cost > 0 then
  for _, hold in ipairs(a.holds) do
    local spent = P .. 'spent:' .. hold[1]
    redis.call('HINCRBY', spent, hold[2], int(a.cost))
    redis.call('EXPIREAT', spent, a.expires[hold[1]])
  end
end
if a.tokens then  -- {limit, reserved - used}: give back what was not used, or take more
  local bucket = P .. 'bucket:' .. a.m
  local level = tonumber(redis.call('HGET', bucket, 'tokens'))
  if level then
    redis.call('HSET', bucket, 'tokens', tostring(math.min(a.tokens[1], level + a.tokens[2])))
  end
end
return 1
"""
)

RENEW = (
    COMMON
    + """
reap(a.now)
local lost = 0
for _, id in ipairs(a.ids) do
  if redis.call('ZADD', P .. 'leases', 'XX', 'CH', a.now + a.ttl, id) == 0 then
    if not redis.call('ZSCORE', P .. 'leases', id) then lost = lost + 1 end
  end
end
return lost
"""
)

REBUILD = (
    COMMON
    + """
local spent = P .. 'spent:' .. a.k
if redis.call('HEXISTS', spent, '#seeded') == 1 then return 0 end
-- Settles that landed before the rebuild are in the ledger (or about to be): start from it.
redis.call('DEL', spent)
redis.call('HSET', spent, '#seeded', 1)
for f, amount in pairs(a.fields) do redis.call('HSET', spent, f, int(amount)) end
redis.call('EXPIREAT', spent, a.expires)
for _, f in ipairs(a.end_users) do redis.call('SADD', P .. 'eu:' .. a.k, f) end
if #a.end_users > 0 then redis.call('EXPIREAT', P .. 'eu:' .. a.k, a.expires) end
return 1
"""
)
