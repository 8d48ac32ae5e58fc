# Process helpers shared by infra/local/stack.sh and infra/prodlike/stack.sh (sourced, not run).
# Each service runs in its own session (process group); its PID and log live in $RUN/<name>.pid|log.

alive() { [ -f "$RUN/$1.pid" ] && kill -0 "$(cat "$RUN/$1.pid")" 2>/dev/null; }

start() {  # name, command...: own session, so `stop` reaches its children too
  local name=$1; shift
  if alive "$name"; then echo "$name already running (pid $(cat "$RUN/$name.pid"))"; return; fi
  (setsid "$@" > "$RUN/$name.log" 2>&1 & echo $! > "$RUN/$name.pid")
}

wait_for() {  # name, url, seconds: until the URL answers, the process exits, or time runs out
  local name=$1 url=$2 limit=$3
  for _ in $(seq "$limit"); do
    if curl -sf -o /dev/null "$url"; then echo "  $name is up: $url"; return 0; fi
    alive "$name" || { echo "$name exited; last log lines:"; tail -20 "$RUN/$name.log"; return 1; }
    sleep 1
  done
  echo "$name did not answer $url within ${limit}s (log: $RUN/$name.log)"; return 1
}

stop() {  # name: SIGTERM the process group, SIGKILL after ${STOP_WAIT:-30} s
  local name=$1
  alive "$name" || { rm -f "$RUN/$name.pid"; return 0; }
  local pid; pid=$(cat "$RUN/$name.pid")
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid"
  for _ in $(seq "${STOP_WAIT:-30}"); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$RUN/$name.pid"; echo "  stopped $name"
}
