# Sourced by bench/proxies, bench/profile, bench/memory and bench/h2: the
# upstream they all load the same way and the check that a cache variant
# really answers from its cache. The caller defines log().

# The upstream nginx's config, written to DIR/upstream.conf: a fixed
# 24-byte body at every path; the same body with `Cache-Control:
# max-age=3600` under /cached, so a cache in front stores it once and
# answers every later request itself; and a 2 KB JSON document at /json.
# With STATUS_PORT, nginx's stub_status answers on that port too (its
# "accepts" counts the connections a proxy opened to the upstream).
write_upstream_conf() { # port dir [status_port]
  local port=$1 dir=$2 status=${3:-} json
  json=$(python3 -c 'import json; print(json.dumps({"items": [{"id": i, "name": f"item {i}", "price": i * 3, "description": "a description of this item"} for i in range(20)], "total": 20}))')
  cat > "$dir/upstream.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $dir/upstream.pid; error_log $dir/upstream.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000;
  server { listen 127.0.0.1:$port;
    location / { return 200 "hello from the upstream\n"; }
    location /cached { add_header Cache-Control "max-age=3600"; return 200 "hello from the upstream\n"; }
    location /json { default_type application/json; return 200 '$json'; }
    location /small { default_type application/json; return 200 '{"ok":true}'; } }
  ${status:+server { listen 127.0.0.1:$status; location / { stub_status; \} \}} }
CONF
}

# The proxying nginx's config, written to DIR/nginx.conf: one worker, no
# master, no access log, upstream keep-alive (128 idle connections) to the
# upstream at UPSTREAM_PORT, listening on PORT; EXTRA_HTTP and
# EXTRA_SERVER are added to its http and server blocks (bench/proxies'
# proxy_cache).
write_nginx_proxy_conf() { # port upstream_port dir [extra_http [extra_server]]
  local port=$1 up=$2 dir=$3 extra_http=${4:-} extra_server=${5:-}
  cat > "$dir/nginx.conf" <<CONF
daemon off; master_process off; worker_processes 1; pid $dir/nginx.pid; error_log $dir/nginx.err warn;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 100000000;
  upstream app { server 127.0.0.1:$up; keepalive 128; }
  $extra_http
  server { listen 127.0.0.1:$port;
    proxy_http_version 1.1; proxy_set_header Connection "";
    location / { proxy_pass http://app; }
    $extra_server } }
CONF
}

# Exits unless a second GET of URL (the first one may store it) answers
# 200 with a FIELD header that matches PATTERN (grep -E, any case):
# a benchmark of cache hits that measured misses would say nothing.
expect_hit() { # name url field pattern [curl options]
  local name=$1 url=$2 field=$3 pattern=$4 value
  shift 4
  curl -fsS -o /dev/null "$@" "$url" || { log "$name: $url failed"; exit 1; }
  value=$(curl -fsS -D - -o /dev/null "$@" "$url" | tr -d '\r' \
    | awk -v field="$field" 'index(tolower($0), tolower(field) ":") == 1 { sub(/^[^:]*: */, ""); print }')
  grep -qiE "$pattern" <<<"$value" || { log "$name: $url is not answered from the cache ($field: ${value:-absent})"; exit 1; }
}
