#!/usr/bin/env bash
# Starts (or reuses) a throwaway PostgreSQL server for the store/postgres tests: a private
# cluster in build/postgres, listening on 127.0.0.1 only, trust auth, no fsync. Prints one
# line for the shell, and nothing else on stdout:
#   export MOAT_TEST_POSTGRES='postgres://moat@127.0.0.1:PORT/moat_test?sslmode=disable'
#
# Usage: eval "$(scripts/postgres-test.sh)"        start or reuse; export the DSN
#        . scripts/postgres-test.sh                 the same, when sourced
#        scripts/postgres-test.sh stop              stop the server (data is kept)
#        scripts/postgres-test.sh purge             stop it and delete its data
# MOAT_PG_DIR overrides the state directory (default: build/postgres in the repository).
# Installs the Debian `postgresql` package when no initdb is found and we are root.

if [[ "${BASH_SOURCE[0]}" != "$0" ]]; then
	# Sourced: run in a child shell so set -e and exit cannot touch the caller.
	_moat_pg_line=$(bash "${BASH_SOURCE[0]}" "$@") && eval "$_moat_pg_line"
	return $?
fi

set -euo pipefail

log() { echo "postgres-test: $*" >&2; }
die() { log "$*"; exit 1; }

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
state=${MOAT_PG_DIR:-$repo/build/postgres}
data=$state/data
user=moat
db=moat_test

find_bindir() {
	local d
	for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
		if [[ -x $d/initdb && -x $d/pg_ctl ]]; then
			echo "$d"
			return 0
		fi
	done
	return 1
}

bindir=$(find_bindir || true)
if [[ -z $bindir ]]; then
	[[ $(id -u) -eq 0 ]] || die "initdb not found under /usr/lib/postgresql/*/bin and not root to install it (apt-get install -y postgresql)"
	log "installing postgresql"
	export DEBIAN_FRONTEND=noninteractive
	if ! apt-get install -y postgresql >&2; then
		apt-get update >&2
		apt-get install -y postgresql >&2
	fi
	bindir=$(find_bindir) || die "postgresql installed but initdb not found"
fi

# As root, the server runs as the postgres user (initdb refuses root); otherwise as us.
as_pg() {
	if [[ $(id -u) -eq 0 ]]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

port_file=$state/port
running() {
	[[ -f $port_file && -f $data/postmaster.pid ]] &&
		as_pg "$bindir/pg_ctl" status -D "$data" >/dev/null 2>&1 &&
		"$bindir/pg_isready" -q -h 127.0.0.1 -p "$(cat "$port_file")" -t 2
}

stop() {
	if [[ -f $data/postmaster.pid ]]; then
		as_pg "$bindir/pg_ctl" stop -D "$data" -m fast -w >&2 || true
	fi
}

case ${1:-start} in
start) ;;
stop)
	stop
	exit 0
	;;
purge)
	stop
	rm -rf "$state"
	exit 0
	;;
*) die "unknown command ${1} (want start, stop or purge)" ;;
esac

print_dsn() {
	printf "export MOAT_TEST_POSTGRES='postgres://%s@127.0.0.1:%s/%s?sslmode=disable'\n" "$user" "$(cat "$port_file")" "$db"
}

if running; then
	print_dsn
	exit 0
fi

mkdir -p "$state"
if [[ $(id -u) -eq 0 ]]; then
	chown postgres: "$state"
	chmod 0700 "$state"
	as_pg test -x "$state" || die "user postgres cannot reach $state; set MOAT_PG_DIR to a directory it can"
fi

if [[ ! -f $data/PG_VERSION ]]; then
	rm -rf "$data"
	log "initdb $data"
	as_pg "$bindir/initdb" -D "$data" -U "$user" --auth=trust -E UTF8 --locale=C.UTF-8 >"$state/initdb.log" 2>&1 ||
		as_pg "$bindir/initdb" -D "$data" -U "$user" --auth=trust -E UTF8 --no-locale >"$state/initdb.log" 2>&1 ||
		die "initdb failed; see $state/initdb.log"
fi

# A stale server from a crash: stop it before starting on a new port.
stop

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

started=
for _ in 1 2 3 4 5; do
	port=$((20000 + RANDOM % 40000))
	port_free "$port" || continue
	# TCP on loopback only; no unix socket (its default directory needs root to create).
	if as_pg "$bindir/pg_ctl" start -D "$data" -w -t 30 -l "$state/server.log" \
		-o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories='' -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" >&2; then
		echo "$port" >"$port_file"
		started=1
		break
	fi
	log "start on port $port failed; retrying"
done
[[ -n $started ]] || die "could not start postgres; see $state/server.log"

if ! "$bindir/psql" -h 127.0.0.1 -p "$port" -U "$user" -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$db'" | grep -q 1; then
	"$bindir/createdb" -h 127.0.0.1 -p "$port" -U "$user" "$db"
fi
log "server up on 127.0.0.1:$port (data $data)"
print_dsn
