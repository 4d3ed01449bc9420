-- wrk script: POST /api/v1/events with an API key from the HERALD_KEY environment variable.
-- wrk -t2 -c64 -d10s -s bench/wrk/events.lua http://127.0.0.1:8080/api/v1/events
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("HERALD_KEY")
wrk.body = '{"event": "item.created", "data": {"item_id": "42", "name": "Chair", "price": 12.5, "padding": "'
  .. string.rep("x", 200) .. '"}}'

local statuses = {}
function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  for status, count in pairs(statuses) do
    io.write(string.format("status %d: %d\n", status, count))
  end
end
