-- GET one path with the caller's headers. args: path, user id.
function init(args)
  req = wrk.format("GET", args[1], { ["X-User-Id"] = args[2] })
end

function request()
  return req
end
