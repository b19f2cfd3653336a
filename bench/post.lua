-- wrk script: POST pre-signed Stripe events, a different body per request.
-- BENCH_BODIES names a file of lines "<Stripe-Signature>\t<body>"; the thread stops after
-- BENCH_MAX responses, so a run is bounded in count as well as by wrk's -d.
local sigs, bodies = {}, {}
local i, answered, max = 0, 0, 0

function init(args)
  for line in io.lines(os.getenv("BENCH_BODIES")) do
    local tab = line:find("\t", 1, true)
    sigs[#sigs + 1] = line:sub(1, tab - 1)
    bodies[#bodies + 1] = line:sub(tab + 1)
  end
  max = tonumber(os.getenv("BENCH_MAX"))
end

function request()
  i = i % #bodies + 1
  return wrk.format("POST", "/webhooks/stripe",
    { ["Stripe-Signature"] = sigs[i], ["Content-Type"] = "application/json" }, bodies[i])
end

function response(status, headers, body)
  answered = answered + 1
  if answered >= max then wrk.thread:stop() end
end

function done(summary, latency, requests)
  io.write(string.format(
    'WRK {"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d, "p50_us": %d, "p99_us": %d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    latency:percentile(50), latency:percentile(99)))
end
