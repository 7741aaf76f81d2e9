#!/usr/bin/env bash
# make demo: deploy the auditor topology on this machine (playbooks/site.yml
# with inventories/local), write some exchange history, let it replicate,
# sync and audit it, and print a short status.  Rerunnable: the deployment is
# idempotent and the generator appends a new batch each time (a new seed, signed by
# the same exchange: --master-seed 0, as the live traffic).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

# The local inventory's layout (inventories/local/group_vars/all.yml).
# psql: PG_BIN (make demo passes the Makefile's), else the highest Debian
# /usr/lib/postgresql/<major>/bin, else pg_config --bindir.
if [ -z "${PG_BIN:-}" ]; then
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -rn); do
        if [ -x "$d/psql" ]; then PG_BIN=$d; break; fi
    done
    PG_BIN=${PG_BIN:-$(pg_config --bindir 2>/dev/null || true)}
fi
[ -x "${PG_BIN:-}/psql" ] || { echo "demo: no PostgreSQL programs found (set PG_BIN)" >&2; exit 1; }
RUN=/run/taler-ops
# The auditor host's Taler configuration (Taler's layout, docs/deployment.md).
TALER_AUDITOR_ETC=/etc/taler-ops/taler-auditor
TALER_OPS=/opt/taler-ops/venv/bin/taler-ops
ROWS=${DEMO_ROWS:-20000}
STATE=demo-state
# Each instance's directory name under /run/taler-ops and /var/lib/taler-ops: the safe copy's
# is "production", the name it has on existing hosts (inventories/local).
declare -A DIR=([exchange]=exchange [ingres]=ingres [safe_copy]=production)
declare -A PORT=([exchange]=5441 [ingres]=5442 [safe_copy]=5443)
declare -A OWNER=([exchange]=taler-exchange-db [ingres]=taler-ingres [safe_copy]=taler-production)
declare -A DB=([exchange]=taler_exchange [ingres]=taler_exchange [safe_copy]=taler_auditor)

step() { printf '\n== %s\n' "$*"; }
has_command() { "$TALER_OPS" "$1" --help >/dev/null 2>&1; }
psql_as_admin() {  # instance, sql -- root is peer-mapped onto each instance's superuser
    "$PG_BIN/psql" -X -A -t -q -v ON_ERROR_STOP=1 -h "$RUN/${DIR[$1]}" -p "${PORT[$1]}" -U "${OWNER[$1]}" -d "${DB[$1]}" -c "$2"
}
replicated_counts() {  # one line per replicated table: name count
    local tables
    tables=$("$TALER_OPS_PY" -c 'from taler_ops.schema import registry; print(" ".join(e.name for e in registry.REPLICATED))')
    local sql="" t
    for t in $tables; do sql+="${sql:+ UNION ALL }SELECT '$t', count(*) FROM exchange.$t"; done
    psql_as_admin "$1" "$sql ORDER BY 1" | tr '|' ' '
}
total() { awk '{s += $2} END {print s + 0}'; }

step "Deploy (ansible-playbook playbooks/site.yml)"
start=$(date +%s)
ansible-playbook playbooks/site.yml
echo "site.yml took $(( $(date +%s) - start )) s"
TALER_OPS_PY=/opt/taler-ops/venv/bin/python

mkdir -p "$STATE"
chmod 0700 "$STATE"
for inst in exchange ingres safe_copy; do
    printf '[exchangedb-postgres]\nCONFIG = postgresql:///%s?host=%s/%s&port=%s&user=%s\n' \
        "${DB[$inst]}" "$RUN" "${DIR[$inst]}" "${PORT[$inst]}" "${OWNER[$inst]}" > "$STATE/$inst.conf"
done
# The auditor schema lives in the safe copy's database; root reads it as the owner (the
# auditor's own role admits only the auditor's UNIX user: peer authentication).
printf '[auditordb-postgres]\nCONFIG = postgresql:///%s?host=%s/%s&port=%s&user=%s\n' \
    "${DB[safe_copy]}" "$RUN" "${DIR[safe_copy]}" "${PORT[safe_copy]}" "${OWNER[safe_copy]}" >> "$STATE/safe_copy.conf"

# --master-seed: the exchange whose MASTER_PUBLIC_KEY the inventory writes into the auditor's
# configuration (taler_exchange_master_seed), so the audit checks every signature.
step "Exchange traffic (taler-ops generate --rows $ROWS on the exchange primary)"
if has_command generate; then
    "$TALER_OPS" generate -c "$STATE/exchange.conf" --rows "$ROWS" --seed "$(date +%s)" --master-seed 0
else
    echo "skipped: not implemented yet"
fi

step "Replication to ingres"
want=$(replicated_counts exchange | total)
for _ in $(seq 1 120); do
    got=$(replicated_counts ingres | total)
    [ "$got" = "$want" ] && break
    sleep 0.5
done
echo "exchange rows: $want, ingres rows: $got"
[ "$got" = "$want" ] || { echo "replication did not catch up" >&2; exit 1; }

step "Safe sync (ingres -> safe copy)"
if ! has_command sync; then
    echo "skipped: not implemented yet"
elif [ -f "$RUN/sync/sync.pid" ] && kill -0 "$(cat "$RUN/sync/sync.pid")" 2>/dev/null; then
    # The daemon holds the safe copy's sync lock, so a second `sync -t` would
    # refuse to run; wait for the daemon to catch up instead.
    echo "the sync daemon runs (supervisor pid $(cat "$RUN/sync/sync.pid")); waiting for it to catch up"
    for _ in $(seq 1 240); do
        copied=$(replicated_counts safe_copy | total)
        [ "$copied" = "$want" ] && break
        sleep 0.5
    done
    echo "safe copy rows: $copied"
else
    runuser -u taler-sync -- "$TALER_OPS" sync -s "$TALER_AUDITOR_ETC/sync-source.conf" \
        -d "$TALER_AUDITOR_ETC/sync-destination.conf" -t
fi

step "Audit of the safe copy (taler-ops audit -t, as the auditor)"
if has_command audit; then
    runuser -u taler-auditor -- "$TALER_OPS" audit -c "$TALER_AUDITOR_ETC/taler-auditor.conf" -t
else
    echo "skipped: not implemented yet"
fi

step "Status"
printf '%-11s %-18s %-6s %-8s %s\n' INSTANCE "UNIX USER" PORT PID STATE
for inst in exchange ingres safe_copy; do
    pid=$(head -n1 "/var/lib/taler-ops/${DIR[$inst]}/postmaster.pid" 2>/dev/null || true)
    user=$( [ -n "$pid" ] && ps -o user= -p "$pid" || echo -)
    state=$( [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo running || echo stopped)
    printf '%-11s %-18s %-6s %-8s %s\n' "$inst" "${user:--}" "${PORT[$inst]}" "${pid:--}" "$state"
done
echo
echo "replication (exchange slot -> ingres subscription):"
psql_as_admin exchange "SELECT format('  slot %s: active=%s wal_status=%s lag=%s', slot_name, active, wal_status,
    pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn))) FROM pg_replication_slots"
psql_as_admin ingres "SELECT format('  subscription %s: enabled=%s worker=%s last message %s', s.subname, s.subenabled,
    coalesce(st.pid::text, 'none'), coalesce(to_char(st.last_msg_receipt_time, 'HH24:MI:SS'), '-'))
    FROM pg_subscription s LEFT JOIN pg_stat_subscription st ON st.subid = s.oid AND st.relid IS NULL"
echo
echo "replicated rows: exchange $(replicated_counts exchange | total), ingres $(replicated_counts ingres | total)," \
     "safe copy $(replicated_counts safe_copy | total)"
if has_command status; then
    echo
    # Without the per-table sync listing, to keep it short.
    "$TALER_OPS" status -p "$STATE/exchange.conf" -s "$STATE/ingres.conf" -d "$STATE/safe_copy.conf" \
        -a "$STATE/safe_copy.conf" --table \
        | awk '/^  table  /{skip=1; next} skip && /^  [a-z_]+ +[0-9]+ +[0-9]+ +[0-9]+$/{next} {skip=0; print}' || true
fi

step "The auditor's report (ansible-playbook playbooks/report.yml)"
# Rendered on the auditor host from Taler's auditor database, fetched to build/reports/.
if has_command report; then
    out=$(ansible-playbook playbooks/report.yml -e '{"taler_report_formats": ["html", "json"]}' 2>&1) \
        || { echo "$out" | tail -n 40 >&2; exit 1; }
    echo "$out" | sed -n 's/^ *"summary": "\(report written.*\)",\{0,1\}$/\1/p'
    report=$(ls -t build/reports/auditor-report-*.html 2>/dev/null | head -n1)
    [ -n "$report" ] || { echo "demo: no report was fetched to build/reports/" >&2; exit 1; }
    echo "report: $PWD/$report"
else
    echo "skipped: not implemented yet"
fi
