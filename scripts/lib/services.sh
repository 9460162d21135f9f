# Shared by scripts/test and scripts/demo-cloud: messages, and PostgreSQL and NATS on this
# machine, installed (apt-get, as root) and started when they are down. Sourced, not run.

say() { printf '\n==> %s\n' "$*"; }
loud() { printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n!!! %s\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\n' "$*" >&2; }

pg_ready() { command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432; }

ensure_postgres() {
  if pg_ready; then return 0; fi
  if ! command -v pg_ctlcluster >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      say "installing PostgreSQL (apt-get)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    else
      return 1
    fi
  fi
  say "starting PostgreSQL"
  for version in $(ls /etc/postgresql 2>/dev/null); do
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  done
  for _ in $(seq 1 30); do pg_ready && break; sleep 1; done
  pg_ready || return 1
  # Trust auth on loopback for the test user, and the `test` database.
  if ! psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1; then
    su postgres -c "psql -qc \"ALTER USER postgres PASSWORD NULL\"" >/dev/null 2>&1 || true
    for hba in /etc/postgresql/*/main/pg_hba.conf; do
      grep -q '^host all all 127.0.0.1/32 trust' "$hba" || sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
    done
    for version in $(ls /etc/postgresql); do pg_ctlcluster --skip-systemctl-redirect "$version" main reload || true; done
    su postgres -c "createdb test" 2>/dev/null || true
  fi
  psql -h 127.0.0.1 -U postgres -d test -c 'select 1' >/dev/null 2>&1
}

# A NATS server with JetStream on loopback, for the cluster.
nats_ready() { (exec 3<>"/dev/tcp/127.0.0.1/4222") 2>/dev/null; }

ensure_nats() {
  if nats_ready; then return 0; fi
  if ! command -v nats-server >/dev/null && [ ! -x /usr/sbin/nats-server ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      say "installing nats-server (apt-get)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nats-server >/dev/null
    else
      return 1
    fi
  fi
  say "starting nats-server with JetStream on 127.0.0.1:4222"
  local server store
  server="$(command -v nats-server || echo /usr/sbin/nats-server)"
  store=/var/lib/nats-server
  mkdir -p "$store" 2>/dev/null || store="$PWD/target/nats-store"
  mkdir -p "$store"
  start-stop-daemon --start --oknodo --background --exec "$server" -- \
    -a 127.0.0.1 -p 4222 -js -sd "$store" -l "$store/nats-server.log" 2>/dev/null \
    || (nohup "$server" -a 127.0.0.1 -p 4222 -js -sd "$store" >"$store/nats-server.log" 2>&1 &)
  for _ in $(seq 1 30); do nats_ready && break; sleep 1; done
  nats_ready
}

