#!/usr/bin/env bash
# Turn on TLS in the local MariaDB for the database-TLS tests (tests/tests/e2e/db_tls.rs): a
# throwaway CA and a server certificate for localhost and 127.0.0.1, a config file naming
# them, and a restart. Idempotent: does nothing when the server already serves TLS with the
# CA this script made. .ci/run calls it; run it by hand (as root) on a developer machine.
#
# The tests find the CA at $TRICKLE_TEST_MYSQL_TLS_CA (default /etc/mysql/trickle-tls/ca.pem).
set -euo pipefail
dir=/etc/mysql/trickle-tls

serves_tls() {
  mariadb -h 127.0.0.1 -uroot -Nse "SHOW VARIABLES LIKE 'have_ssl'" 2>/dev/null | grep -q YES
}

if [ -f "$dir/ca.pem" ] && serves_tls; then
  echo "MariaDB already serves TLS with the test CA ($dir/ca.pem)"
  exit 0
fi

mkdir -p "$dir"
p256=(-newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes)
openssl req -x509 "${p256[@]}" -keyout "$dir/ca.key" -out "$dir/ca.pem" -days 3650 \
  -subj "/CN=Trickle test MariaDB CA" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req "${p256[@]}" -keyout "$dir/server.key" -out "$dir/server.csr" -subj "/CN=localhost" 2>/dev/null
printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "extendedKeyUsage=serverAuth" \
  "basicConstraints=critical,CA:FALSE" "keyUsage=critical,digitalSignature" > "$dir/server.ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
  -out "$dir/server.pem" -days 3650 -extfile "$dir/server.ext" 2>/dev/null
chown -R mysql:mysql "$dir" 2>/dev/null || true
chmod 0644 "$dir/ca.pem" "$dir/server.pem"
chmod 0600 "$dir/server.key" "$dir/ca.key"

# Debian's packaged my.cnf includes mariadb.conf.d/; a minimal one may include nothing.
if grep -qs '^!includedir /etc/mysql/mariadb.conf.d' /etc/mysql/my.cnf; then
  conf_dir=/etc/mysql/mariadb.conf.d
else
  conf_dir=/etc/mysql/conf.d
  grep -qs '^!includedir /etc/mysql/conf.d' /etc/mysql/my.cnf || printf '\n!includedir /etc/mysql/conf.d/\n' >> /etc/mysql/my.cnf
fi
mkdir -p "$conf_dir"
cat > "$conf_dir/90-trickle-tls.cnf" <<CNF
# Written by Trickle's tests/tls/mariadb-tls.sh: TLS for the database-TLS tests.
[mariadbd]
ssl_ca = $dir/ca.pem
ssl_cert = $dir/server.pem
ssl_key = $dir/server.key
CNF

echo "restarting MariaDB with TLS"
mariadb-admin -uroot shutdown 2>/dev/null || mariadb-admin -h 127.0.0.1 -uroot shutdown
for _ in $(seq 1 60); do mariadb-admin -uroot ping >/dev/null 2>&1 || break; sleep 1; done
mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
for _ in $(seq 1 60); do mariadb-admin -uroot ping >/dev/null 2>&1 && break; sleep 1; done
serves_tls || { echo "MariaDB did not turn TLS on; see its error log" >&2; exit 1; }
echo "MariaDB serves TLS (CA $dir/ca.pem)"
