-- wrk script: POST a chat completion as a member; STREAM=1 asks for SSE.
local stream = os.getenv("STREAM") == "1"
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("MEMBER_KEY") or "sk-bench")
wrk.body = '{"model": "deepseek/deepseek-v3.2", "stream": ' .. tostring(stream) ..
  ', "messages": [{"role": "user", "content": "Say hello to the team"}]}'

function response(status, headers, body)
  if status ~= 200 then
    io.stderr:write("unexpected status " .. status .. "\n")
  end
end
