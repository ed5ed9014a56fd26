-- Forward authentication for nginx's Lua module (Debian's libnginx-mod-http-lua): a request to
-- a protected location goes on only with a key the service accepts, and with its caller in the
-- $livekit_auth_* variables, which livekit-auth.conf passes on as X-Auth-* headers. It calls
-- authenticate() in the access phase.
--
-- The service's 204 answers are kept in the shared dictionary livekit_auth_answers, under the
-- key's SHA-256 digest (never the key) and the scope the location requires (an answer for one
-- scope is never used for another), for as long as the answer's X-Auth-Max-Age allows, and
-- each is tagged with the version of the key's shard it was given under. Every worker reads
-- the shards' versions (/auth/key-versions) again once they are X-Auth-Max-Age old (the
-- service's KEY_CACHE_POLL_SECONDS), and uses a kept answer only while its shard's version has
-- not moved: a revocation, rotation, prune or suspension moves it, so nginx asks the service
-- again. A refusal is never kept. The verify request names the version nginx saw, and the
-- service answers it from a state at least that current, so a server that has not polled yet
-- cannot hand nginx a stale answer to keep under the new version. See docs/deployment.md.

local ffi = require("ffi")

ffi.cdef([[unsigned char *SHA256(const unsigned char *data, size_t length, unsigned char *digest);]])

local M = {}

-- What the service tells the protected upstream, and the variables livekit-auth.conf passes it in.
local FORWARDED = {
    "X-Auth-User-Id", "X-Auth-User-Email", "X-Auth-Org", "X-Auth-Key-Id", "X-Auth-Key-Prefix", "X-Auth-Scopes",
}
local VARIABLES = {
    "livekit_auth_user_id", "livekit_auth_user_email", "livekit_auth_org", "livekit_auth_key_id",
    "livekit_auth_key_prefix", "livekit_auth_scopes",
}
-- A limited key's RateLimit headers, which livekit-auth-protected.conf adds to the answer.
local RATE_LIMIT = { "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset" }
local RATE_LIMIT_VARIABLES = { "livekit_auth_ratelimit_limit", "livekit_auth_ratelimit_remaining", "livekit_auth_ratelimit_reset" }
local SHARDS = 256
local LINE = 17 -- a shard's version: 16 hexadecimal digits and a newline
local VERSION_DIGITS = 16

local answers = ngx.shared.livekit_auth_answers
local digest_bytes = ffi.new("unsigned char[32]")
local HEX = {}
for byte = 0, 255 do
    HEX[byte] = string.format("%02x", byte)
end
local hex_parts = {}

-- This worker's copy of the shards' versions, and until when it may use it.
local versions, versions_until = nil, 0

local function digest(key)
    -- nginx is linked with OpenSSL, so its SHA256 is already in the process.
    ffi.C.SHA256(key, #key, digest_bytes)
    for i = 0, 31 do
        hex_parts[i + 1] = HEX[digest_bytes[i]]
    end
    return table.concat(hex_parts)
end

local function shard_versions()
    local now = ngx.now()
    if versions ~= nil and now < versions_until then
        return versions
    end
    local answer = ngx.location.capture("/_livekit_auth/key-versions")
    if answer.status ~= 200 or #answer.body ~= SHARDS * LINE then
        ngx.log(ngx.WARN, "livekit-auth: /auth/key-versions answered ", answer.status, "; no answer is kept meanwhile")
        versions = nil
        return nil
    end
    versions = answer.body
    versions_until = now + (tonumber(answer.header["X-Auth-Max-Age"]) or 0)
    return versions
end

local function forward(values)
    local variables = ngx.var
    for i = 1, #VARIABLES do
        variables[VARIABLES[i]] = values[i]
    end
end

local function kept_values(kept)
    local values, from = {}, VERSION_DIGITS + 2
    for i = 1, #FORWARDED do
        local to = string.find(kept, "\n", from, true)
        values[i] = string.sub(kept, from, (to or 0) - 1)
        from = (to or #kept) + 1
    end
    return values
end

local function refuse(answer)
    local status = answer.status
    if status == 401 or status == 403 or status == 429 then
        -- The service's own refusal, in its envelope and with its message, as it answered it.
        ngx.status = status
        ngx.header["Content-Type"] = "application/json"
        ngx.header["Cache-Control"] = "no-store"
        ngx.header["Retry-After"] = answer.header["Retry-After"]
        for i = 1, #RATE_LIMIT do
            ngx.header[RATE_LIMIT[i]] = answer.header[RATE_LIMIT[i]]
        end
        ngx.header["X-Request-ID"] = ngx.var.request_id
        ngx.print(answer.body)
        return ngx.exit(status)
    end
    ngx.log(ngx.ERR, "livekit-auth: /auth/verify answered ", status)
    return ngx.exec("@livekit_auth_unavailable")
end

function M.authenticate()
    local presented = ngx.req.get_headers()["x-api-key"]
    local scope = ngx.var.livekit_auth_required_scope or ""
    local wanted, kept_as, version
    -- Twice the header is a table: it goes to the service, which refuses it, and is never kept.
    if type(presented) == "string" then
        wanted = digest(presented)
        kept_as = wanted .. " " .. scope
        local all = shard_versions()
        if all ~= nil then
            local at = tonumber(string.sub(wanted, 1, 2), 16) * LINE
            version = string.sub(all, at + 1, at + VERSION_DIGITS)
            local kept = answers:get(kept_as)
            if kept ~= nil and string.sub(kept, 1, VERSION_DIGITS) == version then
                return forward(kept_values(kept))
            end
        end
    end
    local seen = version and string.format("%d", tonumber(version, 16)) or ""
    local answer = ngx.location.capture("/_livekit_auth/verify", {
        vars = { livekit_auth_key_version = seen, livekit_auth_required_scope = scope },
    })
    if answer.status ~= 204 then
        return refuse(answer)
    end
    local values = {}
    for i = 1, #FORWARDED do
        values[i] = answer.header[FORWARDED[i]] or ""
    end
    for i = 1, #RATE_LIMIT do
        ngx.var[RATE_LIMIT_VARIABLES[i]] = answer.header[RATE_LIMIT[i]] or ""
    end
    -- A limited key's answer has no X-Auth-Max-Age: each of its calls is counted by the service.
    local keep = tonumber(answer.header["X-Auth-Max-Age"])
    if version ~= nil and keep ~= nil and keep > 0 then
        -- Full, the dictionary makes room by dropping the answers used least recently.
        answers:set(kept_as, version .. "\n" .. table.concat(values, "\n"), keep)
    end
    return forward(values)
end

return M
