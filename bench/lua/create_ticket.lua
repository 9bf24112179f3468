-- POST /v1/tickets with a unique Idempotency-Key per request: run id (from the bench) + thread + counter,
-- so no request of any run replays another. args: run id, user id.
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function init(args)
  run, user, n = args[1], args[2], 0
  body = '{"title": "Printer on fire", "description": "The printer on the third floor is on fire again."}'
end

function request()
  n = n + 1
  return wrk.format("POST", "/v1/tickets", {
    ["Content-Type"] = "application/json",
    ["X-User-Id"] = user,
    ["Idempotency-Key"] = run .. "-" .. tid .. "-" .. n,
  }, body)
end
