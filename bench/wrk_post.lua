-- wrk script for bench/bench_serving.py: POST JSON bodies, one per line of the file given
-- after `--`, in turn; on exit one line "WRK_RESULT {json}" with the counts and percentiles.
local bodies = {}
local n = 0
local headers = {["Content-Type"] = "application/json"}

function init(args)
  local f = assert(io.open(args[1], "r"))
  for line in f:lines() do
    if #line > 0 then bodies[#bodies + 1] = line end
  end
  f:close()
end

function request()
  n = n % #bodies + 1
  return wrk.format("POST", nil, headers, bodies[n])
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
