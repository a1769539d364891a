"""The batch write: one script call appends a run of one chain's records (one day) to the
day's stream, its indexes and aggregates. Atomic, and idempotent by sequence: the day's head
hash keeps each chain's last written seq, and a batch that starts at or below it is refused
as stale (the caller drops what was already written and sends the rest). A batch also names
the head it follows (`expect`): the batch sent before it, or the last one confirmed. If an
earlier batch failed in flight, or the server has since lost records it acknowledged, the
head differs, and the batch is refused rather than written out of order or after a gap (the
reply says where the head is: see recent.py)."""

from __future__ import annotations

# KEYS[1] = head hash. ARGV: tag, chain, first seq, n, expect (-1: any head below first),
# probe (1 on a cluster),
# s, s x (i, i x index suffix, a, a x (aggregate suffix, field))   key sets
# n x (payload, hash, ts, decision id, key set number)
#
# A key set is what a record is indexed and counted under; records of one shape (one user,
# session, rule and vector in one hour) share it, so a batch names each set once and each
# record names its set: the script, not the writer thread, expands them (Redis has a core to
# spare while the writer thread is the bottleneck: see docs/audit.md).
#
# An index entry stands for a span: records written one after another that share the index
# (the records of one request share its user, session and usually its rule). The script's
# XADDs are consecutive entries of the stream, so the entry's member is the span's first
# stream id and its length, "<ms>-<seq, zero-padded>:<length>", scored by the first record's
# ts; the padding makes spans with the same timestamp (score) sort in write order (Redis
# orders equal scores by member bytes). A decision's field in the day's decision hash
# (`dec`) holds its spans, space-separated; a request split over two batches appends the
# second one.
# Only KEYS[1] is declared: declaring the stream would need read rights on it (EVAL's key
# spec), and every key shares the day's hash tag, so one Cluster slot holds them all.
# While that slot migrates, some of its keys may already be on the other node, and a script
# that fails half-way keeps what it wrote: the retry would append the batch a second time.
# So on a cluster the script first touches every key it will write with a command that
# changes nothing (ZADD XX of an absent member, HEXISTS); a key served elsewhere fails the
# call there, before the first XADD. The stream needs no probe: its first XADD is the first
# write.
WRITE_BATCH = """
local head = tonumber(redis.call('HGET', KEYS[1], ARGV[2]) or '-1')
local first = tonumber(ARGV[3])
if first <= head then return {0, head} end
local expect = tonumber(ARGV[5])
if expect >= 0 and head ~= expect then return {0, head} end
local tag = ARGV[1]
local n = tonumber(ARGV[4])
local sets = {}
local i = 8
for k = 1, tonumber(ARGV[7]) do
  local names, aggs = {}, {}
  for m = 1, tonumber(ARGV[i]) do names[m] = ARGV[i + m] end
  i = i + 1 + #names
  for m = 1, tonumber(ARGV[i]) do
    local suffix, field = ARGV[i + 2 * m - 1], ARGV[i + 2 * m]
    aggs[m] = {suffix .. '\\0' .. field, suffix, field}
  end
  i = i + 1 + 2 * #aggs
  sets[k] = {names, aggs}
end
local decisions = tag .. 'dec'
if ARGV[6] == '1' then
  local seen = {}
  for _, set in ipairs(sets) do
    for _, name in ipairs(set[1]) do
      if not seen[name] then redis.call('ZADD', tag .. name, 'XX', 0, ''); seen[name] = 1 end
    end
    for _, agg in ipairs(set[2]) do
      if not seen[agg[2]] then redis.call('HEXISTS', tag .. agg[2], ''); seen[agg[2]] = 1 end
    end
  end
  redis.call('HEXISTS', decisions, '')
end
local stream = tag .. 'log'
local spans, order = {}, {}  -- index suffix or decision id -> {last k, {ts, member, length}...}
local counts, aggorder = {}, {}
local function extend(name, k, ts, member)
  local s = spans[name]
  if s == nil then
    s = {0}
    spans[name] = s
    order[#order + 1] = name
  end
  if s[1] == k - 1 and #s > 1 then
    local last = s[#s]
    last[3] = last[3] + 1
  else
    s[#s + 1] = {ts, member, 1}
  end
  s[1] = k
end
for k = 1, n do
  local id = redis.call('XADD', stream, '*', 'r', ARGV[i], 'h', ARGV[i + 1])
  local ms, sq = string.match(id, '(%d+)-(%d+)')
  local member = ms .. '-' .. string.format('%06d', tonumber(sq))
  local ts = ARGV[i + 2]
  local set = sets[tonumber(ARGV[i + 4])]
  for _, name in ipairs(set[1]) do extend(name, k, ts, member) end
  extend('\\0' .. ARGV[i + 3], k, ts, member)
  for _, agg in ipairs(set[2]) do
    local c = counts[agg[1]]
    if c == nil then
      aggorder[#aggorder + 1] = agg
      counts[agg[1]] = 1
    else
      counts[agg[1]] = c + 1
    end
  end
  i = i + 5
end
for _, name in ipairs(order) do
  local s = spans[name]
  if string.sub(name, 1, 1) == '\\0' then
    local field = string.sub(name, 2)
    local parts = {}
    for j = 2, #s do parts[j - 1] = s[j][2] .. ':' .. s[j][3] end
    local value = table.concat(parts, ' ')
    if redis.call('HSETNX', decisions, field, value) == 0 then
      redis.call('HSET', decisions, field, redis.call('HGET', decisions, field) .. ' ' .. value)
    end
  else
    local args = {}
    for j = 2, #s do
      args[2 * j - 3] = s[j][1]
      args[2 * j - 2] = s[j][2] .. ':' .. s[j][3]
    end
    redis.call('ZADD', tag .. name, unpack(args))
  end
end
for _, agg in ipairs(aggorder) do
  redis.call('HINCRBY', tag .. agg[2], agg[3], counts[agg[1]])
end
local last = first + n - 1
redis.call('HSET', KEYS[1], ARGV[2], last)
return {1, last}
"""
