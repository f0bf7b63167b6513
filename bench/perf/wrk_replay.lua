-- make bench (bench/perf/receiver.py): wrk replays pre-signed Stripe deliveries and counts 2xx.
-- Argument: a file of two lines per delivery, the Stripe-Signature header then the JSON body.
-- Every request is formatted once, in init; each thread starts at its own place in the list.

local deliveries = {}
local next_index = 1
accepted = 0
refused = 0
local threads = {}

function setup(thread)
  thread:set("thread_number", #threads)
  table.insert(threads, thread)
end

function init(args)
  local file = assert(io.open(args[1], "r"))
  while true do
    local signature = file:read("*l")
    if not signature then break end
    local body = file:read("*l")
    local headers = {}
    headers["Content-Type"] = "application/json"
    headers["Stripe-Signature"] = signature
    deliveries[#deliveries + 1] = wrk.format("POST", "/webhook", headers, body)
  end
  file:close()
  next_index = (thread_number * 997) % #deliveries + 1
end

function request()
  local payload = deliveries[next_index]
  next_index = next_index % #deliveries + 1
  return payload
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    accepted = accepted + 1
  else
    refused = refused + 1
  end
end

function done(summary, latency, requests)
  local total_accepted, total_refused = 0, 0
  for _, thread in ipairs(threads) do
    total_accepted = total_accepted + thread:get("accepted")
    total_refused = total_refused + thread:get("refused")
  end
  local errors = summary.errors
  io.write(string.format(
    "BENCH accepted=%d refused=%d socket_errors=%d duration_us=%d p50_us=%d p99_us=%d\n",
    total_accepted, total_refused,
    errors.connect + errors.read + errors.write + errors.timeout,
    summary.duration, latency:percentile(50), latency:percentile(99)))
end
