#!/usr/bin/env bash
# Run `trickle bench` against the four services as separate processes on a PostgreSQL store
# and a MariaDB legacy database (fresh databases trickle_bench_store / trickle_bench_legacy,
# dropped and recreated on every run). Extra arguments go to `trickle bench`, e.g.
#
#   tests/bench/postgres-mariadb.sh --duration 20
#   TRICKLE_STORE__ARGON2__MEMORY_KIB=7168 TRICKLE_STORE__ARGON2__ITERATIONS=5 \
#     tests/bench/postgres-mariadb.sh --scenario migrated-login
#
# Needs: a release build (cargo build --release -p trickle), PostgreSQL on 127.0.0.1:5432
# (user postgres, trust) and MariaDB on 127.0.0.1:3306 (root, no password), openssl.
set -euo pipefail

root="$(cd "$(dirname "$0")/../.." && pwd)"
trickle="${TRICKLE_BIN:-${CARGO_TARGET_DIR:-$root/target}/release/trickle}"
[ -x "$trickle" ] || { echo "no release binary at $trickle: cargo build --release -p trickle" >&2; exit 1; }
pg="${TRICKLE_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
my="${TRICKLE_BENCH_MYSQL:-mysql://root@127.0.0.1:3306}"

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

psql -q "$pg/postgres" -c "DROP DATABASE IF EXISTS trickle_bench_store" -c "CREATE DATABASE trickle_bench_store"
mariadb -h 127.0.0.1 -u root -e "DROP DATABASE IF EXISTS trickle_bench_legacy; CREATE DATABASE trickle_bench_legacy;
  CREATE TABLE trickle_bench_legacy.users (id BIGINT PRIMARY KEY, email VARCHAR(255) NOT NULL,
    password_hash VARCHAR(255) NOT NULL, email_verified TINYINT(1) NOT NULL DEFAULT 0, name VARCHAR(255),
    UNIQUE KEY (email));"
openssl genpkey -algorithm ed25519 -out "$work/signing-key.pem" 2>/dev/null

export RUST_LOG="${RUST_LOG:-warn}"
export TRICKLE_FRONTEND__LISTEN=127.0.0.1:50061 TRICKLE_STORE__LISTEN=127.0.0.1:50062
export TRICKLE_LEGACY__LISTEN=127.0.0.1:50063 TRICKLE_MIGRATION__LISTEN=127.0.0.1:50064
export TRICKLE_MIGRATION__ADMIN_LISTEN=127.0.0.1:50065
export TRICKLE_FRONTEND__STORE_URL=http://127.0.0.1:50062 TRICKLE_MIGRATION__STORE_URL=http://127.0.0.1:50062
export TRICKLE_FRONTEND__COORDINATOR_URL=http://127.0.0.1:50064 TRICKLE_MIGRATION__LEGACY_URL=http://127.0.0.1:50063
export TRICKLE_FRONTEND__METRICS_LISTEN= TRICKLE_STORE__METRICS_LISTEN=
export TRICKLE_LEGACY__METRICS_LISTEN= TRICKLE_MIGRATION__METRICS_LISTEN=
export TRICKLE_STORE__DATABASE_URL="$pg/trickle_bench_store"
export TRICKLE_LEGACY__DATABASE_URL="$my/trickle_bench_legacy"
export TRICKLE_LEGACY__FIND_USER="SELECT id, email, password_hash, email_verified, name FROM users WHERE email = ?"
export TRICKLE_LEGACY__COUNT_USERS="SELECT COUNT(*) FROM users"
export TRICKLE_LEGACY__LIST_USERS="SELECT id, email, password_hash, email_verified, name FROM users WHERE id > ? ORDER BY id LIMIT ?"
export TRICKLE_TOKENS__SIGNING_KEY_FILE="$work/signing-key.pem"

"$trickle" migrate >&2
for service in user-store legacy-connector coordinator frontend; do
  "$trickle" serve "$service" >"$work/$service.log" 2>&1 &
  pids+=("$!")
  eval "pid_${service//-/_}=$!"
done
# Wait until the public API answers (a login of a nobody is a clean error, not a refusal).
for _ in $(seq 50); do
  if echo x | "$trickle" login --addr http://127.0.0.1:50061 nobody@bench.trickle.invalid 2>&1 | grep -q "login failed"; then
    break
  fi
  sleep 0.2
done

"$trickle" bench --addr http://127.0.0.1:50061 \
  --legacy-database-url "$my/trickle_bench_legacy" \
  --watch-pid "$pid_user_store" --watch-pid "$pid_frontend" \
  --watch-pid "$pid_legacy_connector" --watch-pid "$pid_coordinator" "$@"
