"""The batch write: one script call appends a run of one chain's records (one day) to the
day's stream, its indexes and aggregates. Atomic, and idempotent by sequence: the day's head
hash keeps each chain's last written seq, and a batch that starts at or below it is refused
as stale (the caller drops what was already written and sends the rest). A pipelined batch
also names the head it follows (`expect`): if an earlier batch of its chain and day failed in
flight, it is refused rather than written out of order."""

from __future__ import annotations

# KEYS[1] = head hash. ARGV: tag, chain, first seq, n, expect (-1: any head below first),
# n x (payload, hash, ts),
# g, g x (suffix, count, positions...), a, a x (suffix, field, increment).
# Index members are stream ids with the sequence part zero-padded, so that records with the
# same timestamp (score) sort in write order (Redis orders equal scores by member bytes).
# Only KEYS[1] is declared: declaring the stream would need read rights on it (EVAL's key
# spec), and every key shares the day's hash tag, so one Cluster slot holds them all.
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
local i = 6
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
  for j = 0, c - 1 do
    local p = tonumber(ARGV[i + j])
    args[#args + 1] = ts[p]
    args[#args + 1] = ids[p]
  end
  redis.call('ZADD', key, unpack(args))
  i = i + c
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
