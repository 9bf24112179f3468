-- GET one path with the caller's identity. args: path, value, header (default X-User-Id: the value
-- is the user id; with "Authorization" it is "Bearer <token>").
function init(args)
  req = wrk.format("GET", args[1], { [args[3] or "X-User-Id"] = args[2] })
end

function request()
  return req
end
