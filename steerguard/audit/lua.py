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
# probe (1 on a cluster), n x (payload, hash, ts),
# g, g x (suffix, count, count x (position, length))   sorted-set indexes
# d, d x (decision id, count, count x (position, length))   the day's decision hash (`dec`)
# a, a x (suffix, field, increment)                     aggregates.
#
# An index entry stands for a span: `length` records written one after another from
# `position` on (the records of one request share its user, session and usually its rule).
# The script's XADDs are consecutive entries of the stream, so the entry's member is the
# span's first stream id and its length, "<ms>-<seq, zero-padded>:<length>"; the padding
# makes spans with the same timestamp (score) sort in write order (Redis orders equal scores
# by member bytes). A decision's field holds its spans, space-separated; a request split over
# two batches appends the second one.
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
local stream = tag .. 'log'
local ids, ts = {}, {}
local i = 7
if ARGV[6] == '1' then
  local j = i + 3 * n
  local g = tonumber(ARGV[j]); j = j + 1
  for _ = 1, g do
    redis.call('ZADD', tag .. ARGV[j], 'XX', 0, '')
    j = j + 2 + 2 * tonumber(ARGV[j + 1])
  end
  local d = tonumber(ARGV[j]); j = j + 1
  if d > 0 then redis.call('HEXISTS', tag .. 'dec', '') end
  for _ = 1, d do j = j + 2 + 2 * tonumber(ARGV[j + 1]) end
  local a = tonumber(ARGV[j]); j = j + 1
  for _ = 1, a do
    redis.call('HEXISTS', tag .. ARGV[j], '')
    j = j + 3
  end
end
for k = 1, n do
  local id = redis.call('XADD', stream, '*', 'r', ARGV[i], 'h', ARGV[i + 1])
  local ms, sq = string.match(id, '(%d+)-(%d+)')
  ids[k] = ms .. '-' .. string.format('%06d', tonumber(sq))
  ts[k] = ARGV[i + 2]
  i = i + 3
end
local g = tonumber(ARGV[i]); i = i + 1
for _ = 1, g do
  local key = tag .. ARGV[i]
  local c = tonumber(ARGV[i + 1]); i = i + 2
  local args = {}
  for j = 1, c do
    local p = tonumber(ARGV[i])
    args[2 * j - 1] = ts[p]
    args[2 * j] = ids[p] .. ':' .. ARGV[i + 1]
    i = i + 2
  end
  redis.call('ZADD', key, unpack(args))
end
local decisions = tag .. 'dec'
local d = tonumber(ARGV[i]); i = i + 1
for _ = 1, d do
  local field = ARGV[i]
  local c = tonumber(ARGV[i + 1]); i = i + 2
  local spans = {}
  for j = 1, c do
    spans[j] = ids[tonumber(ARGV[i])] .. ':' .. ARGV[i + 1]
    i = i + 2
  end
  local value = table.concat(spans, ' ')
  if redis.call('HSETNX', decisions, field, value) == 0 then
    redis.call('HSET', decisions, field, redis.call('HGET', decisions, field) .. ' ' .. value)
  end
end
local a = tonumber(ARGV[i]); i = i + 1
for _ = 1, a do
  redis.call('HINCRBY', tag .. ARGV[i], ARGV[i + 1], ARGV[i + 2])
  i = i + 3
end
local last = first + n - 1
redis.call('HSET', KEYS[1], ARGV[2], last)
return {1, last}
"""
