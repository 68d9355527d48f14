-- wrk script: POST a chat completion as a member (STREAM=1 asks for SSE), and print one
-- machine-readable line at the end for bench/proxies.py.
local stream = os.getenv("STREAM") == "1"
wrk.method = "POST"
wrk.path = os.getenv("BENCH_PATH") or "/v1/chat/completions"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("MEMBER_KEY") or "sk-bench")
local messages = '[{"role": "user", "content": "Say hello to the team"}]'
if os.getenv("LARGE") == "1" then
  -- A coding agent's context: 512 messages of 2 KB, about 1 MB of JSON.
  local turns = {}
  for i = 1, 512 do
    local role = (i % 2 == 1) and "user" or "assistant"
    turns[i] = '{"role": "' .. role .. '", "content": "' .. string.rep("def f(x): return x  ", 100) .. '"}'
  end
  messages = "[" .. table.concat(turns, ", ") .. "]"
end
wrk.body = '{"model": "deepseek/deepseek-v3.2", "stream": ' .. tostring(stream) ..
  ', "messages": ' .. messages .. '}'

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
