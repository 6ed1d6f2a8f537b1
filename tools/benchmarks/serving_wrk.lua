-- wrk script of the serving benchmark: POSTs pre-encoded JSON bodies (one per line of the
-- file given after `--`), each thread starting at its own offset so threads send different
-- reviews, and prints one JSON line of results when the run ends. Every RECONNECT_EVERY-th
-- request of a thread asks the server to close its connection (`Connection: close`), and
-- wrk opens a new one: new connections spread the load over a server's workers.
--   wrk -t2 -c64 -d10s -s serving_wrk.lua http://127.0.0.1:PORT/predict -- bodies.jsonl RECONNECT_EVERY

local thread_count = 0

function setup(thread)
  thread:set("offset", thread_count * 7919)
  thread_count = thread_count + 1
end

function init(args)
  bodies = {}
  for line in io.lines(args[1]) do
    bodies[#bodies + 1] = line
  end
  position = (offset or 0) % #bodies
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  reconnect_every = tonumber(args[2])
  sent = 0
  -- wrk.format sends the headers it is given instead of wrk.headers: the same ones, plus close.
  closing = {["Connection"] = "close"}
  for name, value in pairs(wrk.headers) do
    closing[name] = value
  end
end

function request()
  position = position % #bodies + 1
  sent = sent + 1
  if sent % reconnect_every == 0 then
    return wrk.format(nil, nil, closing, bodies[position])
  end
  return wrk.format(nil, nil, nil, bodies[position])
end

function done(summary, latency, requests)
  local errors = summary.errors
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "p50_us": %d, "p95_us": %d, "p99_us": %d, '
      .. '"status_errors": %d, "socket_errors": %d, "timeouts": %d}\n',
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99),
    errors.status, errors.connect + errors.read + errors.write, errors.timeout))
end
