"""The shared feedback store: one Redis for several replicas (redis-py; one server, or one slot of a cluster).

    RedisStore(FeedbackConfig("redis://127.0.0.1:6379/0", key_prefix="apg:feedback"))

Keys, all under the hash tag {prefix} (one cluster slot, so the Lua scripts may touch several):
    {p}:r:<request_id>   hash: meta ("arm SEP model SEP version"), t (scored at), n (rows), c:<row> (0/1 feedback)
    {p}:s:<request_id>   string: the n scores, little-endian float64 (a row's score is one GETRANGE)
    {p}:imp              sorted set by scored-at: "meta SEP n SEP request_id", one member per request
    {p}:labels           sorted set by scored-at: "meta SEP score SEP clicked SEP request_id SEP row"
    {p}:rows             rows in {p}:imp (what max_rows bounds)
Request keys expire at scored-at + max_age_s (EXPIREAT); the two indexes are trimmed by the prune script (age, then
the oldest requests beyond max_rows). Each write is a Lua script, so it is atomic: a request id is recorded once
(its first answer), and a row's feedback is checked and set in one step (HEXISTS + HSET inside the script), so two
replicas can never both accept it. A batch of scored requests is one pipeline of script calls, RECORD_CHUNK
requests each (the record and prune scripts build request keys themselves: fine on one server or one cluster slot).
"""

from __future__ import annotations

from service.feedback.base import SEP, FeedbackConfig, FeedbackStore, Scored, group_by_arm

RECORD_CHUNK = 100  # requests per script call: a call blocks the server while it runs

# ARGV: the key base "{p}:", max_age_s, then 5 per request: meta, scored-at, rows, packed scores, request id
RECORD = """
local base, max_age, added = ARGV[1], tonumber(ARGV[2]), 0
for i = 3, #ARGV, 5 do
  local meta, t, n, rid = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 4]
  local r, s = base .. 'r:' .. rid, base .. 's:' .. rid
  if redis.call('EXISTS', r) == 0 then
    local expire = math.floor(tonumber(t) + max_age) + 1
    redis.call('HSET', r, 'meta', meta, 't', t, 'n', n)
    redis.call('SET', s, ARGV[i + 3])
    redis.call('EXPIREAT', r, expire)
    redis.call('EXPIREAT', s, expire)
    redis.call('ZADD', KEYS[1], t, meta .. '\\31' .. n .. '\\31' .. rid)
    redis.call('INCRBY', KEYS[2], n)
    added = added + 1
  end
end
return added
"""
# ARGV: row, clicked (0/1), now, join_window_s, max_age_s, request_id; the checks in base.FeedbackStore._join's order
FEEDBACK = """
local h = redis.call('HMGET', KEYS[1], 'meta', 't', 'n')
if not h[1] then return 'unknown' end
local row, t, now = tonumber(ARGV[1]), tonumber(h[2]), tonumber(ARGV[3])
if row >= tonumber(h[3]) or now - t > tonumber(ARGV[5]) then return 'unknown' end
local field = 'c:' .. ARGV[1]
if redis.call('HEXISTS', KEYS[1], field) == 1 then return 'duplicate' end
if now - t > tonumber(ARGV[4]) then return 'late' end
redis.call('HSET', KEYS[1], field, ARGV[2])
local score = struct.unpack('<d', redis.call('GETRANGE', KEYS[2], row * 8, row * 8 + 7))
local entry = {h[1], string.format('%.17g', score), ARGV[2], ARGV[6], ARGV[1]}
redis.call('ZADD', KEYS[3], h[2], table.concat(entry, '\\31'))
return 'accepted'
"""
# ARGV: forget before (now - max_age_s), max_rows, the key base "{p}:"; returns the number of requests forgotten
PRUNE = """
local entry = '^[^\\31]*\\31[^\\31]*\\31[^\\31]*\\31(%d+)\\31(.*)$'
local function forget(upto)
  local members = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', upto)
  for _, m in ipairs(members) do
    local n, rid = string.match(m, entry)
    redis.call('DECRBY', KEYS[3], n)
    redis.call('DEL', ARGV[3] .. 'r:' .. rid, ARGV[3] .. 's:' .. rid)
  end
  redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', upto)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', upto)
  return #members
end
local gone = forget('(' .. ARGV[1])
local total, max_rows = tonumber(redis.call('GET', KEYS[3]) or '0'), tonumber(ARGV[2])
local cutoff, start = nil, 0
while total > max_rows do  -- oldest first, while more than max_rows rows remain; then all scored at that time
  local chunk = redis.call('ZRANGE', KEYS[1], start, start + 999, 'WITHSCORES')
  if #chunk == 0 then break end
  for i = 1, #chunk, 2 do
    if total <= max_rows then break end
    total = total - tonumber((string.match(chunk[i], entry)))
    cutoff = chunk[i + 1]
  end
  start = start + 1000
end
if cutoff then gone = gone + forget(cutoff) end
return gone
"""


class RedisStore(FeedbackStore):
    def __init__(self, config: FeedbackConfig, metrics=None) -> None:
        import redis  # the serve extra's redis-py, imported only by a Redis store

        super().__init__(config, metrics)
        self.base = f"{{{config.key_prefix}}}:"
        connect = min(5.0, config.request_timeout_s)  # a Redis that does not answer delays nothing for long
        self.client = redis.Redis.from_url(config.url, socket_timeout=10, socket_connect_timeout=connect)
        # feedback() and window() from requests' threads: bounded by the request timeout
        timeout = min(10.0, config.request_timeout_s)
        self.requests = redis.Redis.from_url(config.url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            self.client.ping()
        except redis.RedisError as exc:
            self._close()
            scheme, _, rest = config.url.partition("://")
            where = f"{scheme}://{rest.rpartition('@')[2]}"  # never a password in a log line
            raise RuntimeError(f"cannot connect to redis ({where}): {exc}") from exc
        self._record = self.client.register_script(RECORD)
        self._feedback = self.client.register_script(FEEDBACK)
        self._prune_script = self.client.register_script(PRUNE)
        self._keys = [self.base + k for k in ("imp", "labels", "rows")]
        self._start()

    def _write(self, batch: list[Scored]) -> None:
        pipe = self.client.pipeline(transaction=False)
        keys = [self._keys[0], self._keys[2]]
        for start in range(0, len(batch), RECORD_CHUNK):
            args: list = [self.base, repr(self.config.max_age_s)]
            for s in batch[start : start + RECORD_CHUNK]:
                args += (SEP.join((s.arm, s.model, s.version)), repr(s.at), s.rows, s.scores, s.request_id)
            self._record(keys=keys, args=args, client=pipe)
        pipe.execute()

    def _join(self, items: list[tuple[str, int, bool]], now: float) -> list[str]:
        pipe = self.requests.pipeline(transaction=False)
        cfg, labels = self.config, self._keys[1]
        for rid, row, clicked in items:
            keys = [f"{self.base}r:{rid}", f"{self.base}s:{rid}", labels]
            args = [row, int(clicked), repr(now), repr(cfg.join_window_s), repr(cfg.max_age_s), rid]
            self._feedback(keys=keys, args=args, client=pipe)
        return [status.decode() for status in pipe.execute()]

    def _fetch_window(self, lower: float):
        pipe = self.client.pipeline(transaction=True)  # MULTI/EXEC: one snapshot for both reads
        for key in self._keys[:2]:
            pipe.zrangebyscore(key, repr(lower), "+inf")
        requests, labels = pipe.execute()
        arms: dict[str, tuple[int, str, str]] = {}
        for member in requests:  # ascending scored-at: the last one seen is the arm's latest model
            arm, model, version, n, _ = member.decode().split(SEP, 4)
            arms[arm] = (arms.get(arm, (0,))[0] + int(n), model, version)
        entries = [member.decode().split(SEP, 5) for member in labels]  # arm, model, version, score, clicked, rest
        return arms, group_by_arm([(e[0], float(e[3]), e[4] == "1") for e in entries])

    def _prune(self, now: float) -> int:
        args = [repr(now - self.config.max_age_s), self.config.max_rows, self.base]
        return int(self._prune_script(keys=self._keys, args=args))

    def _close(self) -> None:
        self.client.close()
        self.requests.close()
