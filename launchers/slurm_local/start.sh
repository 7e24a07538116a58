#!/usr/bin/env bash
# Start a private single-node Slurm (munge, MariaDB, slurmdbd, slurmctld, slurmd).
# Idempotent: daemons that are already up are left alone; if everything is up
# and healthy it says so and exits 0.  Run as root:
#   sudo launchers/slurm_local/start.sh            # start / repair
#   sudo launchers/slurm_local/start.sh --clean    # wipe job state + accounting DB first
# Settings (env): see common.sh (PET_SLURM_DIR, PET_SLURM_CLUSTER, ports, ...).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

CLEAN=0
for a in "$@"; do
    case $a in
        --clean) CLEAN=1 ;;
        -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
        *) die "unknown argument: $a" ;;
    esac
done

need_root
for b in munged munge unmunge mariadbd mariadb-install-db mariadb mariadb-admin \
         slurmdbd slurmctld slurmd sacctmgr sinfo sacct scontrol; do
    command -v "$b" >/dev/null 2>&1 \
        || die "'$b' not found -- run launchers/slurm_local/install.sh first"
done

T0=$(date +%s.%N)
take_lock
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}'; }

if [[ $CLEAN -eq 1 ]]; then
    log "--clean: stopping daemons and wiping $D"
    "$KIT_DIR/stop.sh" --purge
    T0=$(date +%s.%N)
fi

# ---------------------------------------------------------------- settings
if [[ -z $PET_SLURM_USER ]]; then
    if getent passwd slurm >/dev/null; then PET_SLURM_USER=slurm; else PET_SLURM_USER=root; fi
fi
getent passwd "$PET_SLURM_USER" >/dev/null || die "SlurmUser '$PET_SLURM_USER' does not exist"
getent passwd mysql >/dev/null || die "user 'mysql' missing (mariadb-server not installed?)"
getent passwd munge >/dev/null || die "user 'munge' missing (munge not installed?)"
CPUS=${PET_SLURM_CPUS:-$(nproc)}
if [[ -z $PET_SLURM_MEM_MB ]]; then
    PET_SLURM_MEM_MB=$(awk '/^MemTotal:/{printf "%d", $2/1024*0.9}' /proc/meminfo)
fi

# ---------------------------------------------------------------- private dirs
# (owners matter: StateSaveLocation/logs/pids -> SlurmUser, datadir -> mysql)
install -d -m 0755 "$D" "$ETC_DIR" "$SPOOL_DIR"
install -d -m 0755 -o "$PET_SLURM_USER" "$LOG_DIR" "$RUN_DIR"
install -d -m 0700 -o "$PET_SLURM_USER" "$STATE_DIR"
install -d -m 0750 -o mysql -g mysql "$DB_DIR"
for u in "$PET_SLURM_USER" mysql; do
    runuser -u "$u" -- test -x "$D" \
        || die "user $u cannot enter $D (a parent directory is not world-executable); pick another PET_SLURM_DIR"
done

# ---------------------------------------------------------------- configs
if [[ -s $ETC_DIR/dbpass ]]; then
    DB_PASS=$(cat "$ETC_DIR/dbpass")
else
    DB_PASS=${PET_SLURM_DB_PASS:-$(od -An -tx1 -N12 /dev/urandom | tr -d ' \n')}
    ( umask 077; printf '%s' "$DB_PASS" > "$ETC_DIR/dbpass" )
fi

render() {  # render TEMPLATE -> stdout, replacing @KEY@ placeholders
    local s
    s=$(<"$1")
    local -A v=(
        [MARKER]=$MARKER [DIR]=$D [CLUSTER]=$PET_SLURM_CLUSTER [SLURM_USER]=$PET_SLURM_USER
        [CTLD_PORT]=$PET_SLURM_CTLD_PORT [SLURMD_PORT]=$PET_SLURM_SLURMD_PORT
        [DBD_PORT]=$PET_SLURM_DBD_PORT [DB_PORT]=$PET_SLURM_DB_PORT [DB_PASS]=$DB_PASS
        [STATE_DIR]=$STATE_DIR [SPOOL_DIR]=$SPOOL_DIR [LOG_DIR]=$LOG_DIR
        [CTLD_PIDFILE]=$CTLD_PIDFILE [SLURMD_PIDFILE]=$SLURMD_PIDFILE [DBD_PIDFILE]=$DBD_PIDFILE
        [CPUS]=$CPUS [MEM_MB]=$PET_SLURM_MEM_MB [CRED_EXPIRE]=$PET_SLURM_CRED_EXPIRE
    )
    local k
    for k in "${!v[@]}"; do s=${s//"@$k@"/"${v[$k]}"}; done
    [[ $s != *@[A-Z_]*@* ]] || die "unrendered placeholder in $1"
    printf '%s\n' "$s"
}

install_conf() {  # install_conf NAME OWNER MODE
    local name=$1 owner=$2 mode=$3 src=$ETC_DIR/$1 dst=$PET_SLURM_CONF_DIR/$1
    ( umask 077; render "$KIT_DIR/$name.in" > "$src" )
    if [[ -e $dst ]] && ! grep -qxF "$MARKER" "$dst"; then
        if [[ ${PET_SLURM_FORCE:-0} == 1 ]]; then
            cp -p "$dst" "$dst.bak.$(date +%Y%m%d%H%M%S)"
            warn "backed up existing $dst (PET_SLURM_FORCE=1)"
        else
            die "$dst exists and was not written by this kit (a real Slurm install?). Set PET_SLURM_FORCE=1 to back it up and replace it, or PET_SLURM_CONF_DIR=/some/dir (then export SLURM_CONF=/some/dir/slurm.conf in your shell)."
        fi
    fi
    if ! cmp -s "$src" "$dst"; then
        install -d -m 0755 "$PET_SLURM_CONF_DIR"
        install -m "$mode" -o "$owner" "$src" "$dst"
        log "wrote $dst"
    fi
    chown "$owner" "$dst"; chmod "$mode" "$dst"
}
install_conf slurm.conf root 0644
install_conf slurmdbd.conf "$PET_SLURM_USER" 0600   # slurmdbd insists: owner SlurmUser, not world-readable

# A config change only reaches running daemons through a restart (jobs survive:
# slurmctld saves its state, slurmstepd keeps running).  started.sha records
# the config the running daemons were started with.
CONF_SHA=$(cat "$PET_SLURM_CONF_DIR/slurm.conf" "$PET_SLURM_CONF_DIR/slurmdbd.conf" | sha256sum | cut -c1-16)
if { pid_alive "$CTLD_PIDFILE" slurmctld || pid_alive "$SLURMD_PIDFILE" slurmd \
        || pid_alive "$DBD_PIDFILE" slurmdbd; } >/dev/null \
   && [[ $(cat "$RUN_DIR/started.sha" 2>/dev/null) != "$CONF_SHA" ]]; then
    log "config differs from the one the running Slurm daemons use -- restarting them"
    "$KIT_DIR/stop.sh" --keep-jobs
fi

ALREADY=0   # number of daemons that were already running

fail() {  # fail WHAT LOGFILE...
    local what=$1; shift
    printf '\n' >&2
    local f; for f in "$@"; do log_tail "$f" 40; done
    die "$what did not come up within ${PET_SLURM_TIMEOUT}s (logs above; state in $D; clean up with stop.sh)"
}

# ---------------------------------------------------------------- 1. munge
if munge_ok; then
    log "munged already running ($MUNGE_SOCKET)"
    ALREADY=$((ALREADY + 1))
else
    if [[ ! -s $MUNGE_KEY ]]; then
        install -d -m 0700 -o munge -g munge /etc/munge
        if command -v mungekey >/dev/null 2>&1; then
            mungekey --create --keyfile="$MUNGE_KEY"
        else
            dd if=/dev/urandom of="$MUNGE_KEY" bs=1 count=1024 status=none
        fi
        log "created munge key $MUNGE_KEY"
    fi
    chown munge:munge "$MUNGE_KEY"; chmod 0400 "$MUNGE_KEY"
    install -d -m 0755 -o munge -g munge /run/munge
    install -d -m 0700 -o munge -g munge /var/log/munge /var/lib/munge
    rm -f "$MUNGE_SOCKET" "$MUNGE_SOCKET.lock" 2>/dev/null || true   # stale (munged not answering)
    # default socket on purpose: a custom one breaks slurmctld -> slurmdbd auth
    runuser -u munge -- munged 9>&- > "$LOG_DIR/munged.stderr" 2>&1 \
        || { cat "$LOG_DIR/munged.stderr" >&2; fail munged /var/log/munge/munged.log; }
    touch "$RUN_DIR/munged.owned"   # stop.sh only stops a munged that we started
    wait_for "$PET_SLURM_TIMEOUT" munged munge_ok || fail munged /var/log/munge/munged.log
    log "munged up"
fi

# ---------------------------------------------------------------- 2. MariaDB
DB_ERR=$DB_DIR/mariadb.err
if pid_alive "$DB_PIDFILE" mariadbd >/dev/null && db_ok; then
    log "mariadbd already running (127.0.0.1:$PET_SLURM_DB_PORT)"
    ALREADY=$((ALREADY + 1))
else
    read -r -a db_opts <<< "$PET_SLURM_DB_OPTS"
    if pid=$(pid_alive "$DB_PIDFILE" mariadbd); then
        log "mariadbd (pid $pid) is starting, waiting for it"
    else
        if [[ ! -d $DB_DIR/data/mysql ]]; then
            log "initialising MariaDB datadir $DB_DIR/data"
            rm -rf "$DB_DIR/data"
            mariadb-install-db --no-defaults --datadir="$DB_DIR/data" --user=mysql \
                --auth-root-authentication-method=socket --skip-test-db "${db_opts[@]}" \
                > "$DB_DIR/install-db.log" 2>&1 \
                || { log_tail "$DB_DIR/install-db.log"; die "mariadb-install-db failed"; }
        fi
        rm -f "$DB_PIDFILE" "$DB_SOCKET" "$DB_SOCKET.lock"
        port_in_use "$PET_SLURM_DB_PORT" \
            && die "port $PET_SLURM_DB_PORT is already in use by another program; set PET_SLURM_DB_PORT"
        setsid mariadbd --no-defaults --user=mysql --datadir="$DB_DIR/data" \
            --socket="$DB_SOCKET" --pid-file="$DB_PIDFILE" --log-error="$DB_ERR" \
            --bind-address=127.0.0.1 --port="$PET_SLURM_DB_PORT" --skip-name-resolve \
            --innodb-buffer-pool-size=128M --innodb-lock-wait-timeout=900 \
            "${db_opts[@]}" \
            --max-connections=100 9>&- < /dev/null > "$DB_DIR/mariadbd.stdout" 2>&1 &
        disown
    fi
    wait_for "$PET_SLURM_TIMEOUT" mariadbd db_ok || fail mariadbd "$DB_ERR" "$DB_DIR/mariadbd.stdout"
    log "mariadbd up (127.0.0.1:$PET_SLURM_DB_PORT)"
fi
# idempotent: (re)create the accounting DB + user, (re)set the password
mariadb --no-defaults --socket="$DB_SOCKET" -u root <<SQL || die "creating slurm DB user failed"
CREATE DATABASE IF NOT EXISTS slurm_acct_db;
CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'127.0.0.1' IDENTIFIED BY '$DB_PASS';
ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';
GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';
FLUSH PRIVILEGES;
SQL

# ---------------------------------------------------------------- 3. slurmdbd
start_slurm_daemon() {  # start_slurm_daemon [--soft] NAME PORT PIDFILE LOGFILE CHECKFN [ARGS...]
    local soft=0; [[ $1 == --soft ]] && { soft=1; shift; }
    local name=$1 port=$2 pidfile=$3 logfile=$4 check=$5; shift 5
    if pid_alive "$pidfile" "$name" >/dev/null && "$check"; then
        log "$name already running"
        ALREADY=$((ALREADY + 1))
        return 0
    fi
    if ! pid_alive "$pidfile" "$name" >/dev/null; then
        rm -f "$pidfile"
        echo "$CONF_SHA" > "$RUN_DIR/started.sha"
        # a foreign daemon on our port would answer our health checks -> refuse
        port_in_use "$port" && die "port $port (for $name) is already in use by another program (a system Slurm?); stop it or change the PET_SLURM_*_PORT settings"
        # the daemons fork themselves; stderr only catches very early errors;
        # 9>&- : daemons must not inherit the start/stop lock
        "$name" "$@" 9>&- < /dev/null > "$LOG_DIR/$name.stderr" 2>&1 \
            || { cat "$LOG_DIR/$name.stderr" >&2; fail "$name" "$logfile"; }
    fi
    if ! wait_for "$PET_SLURM_TIMEOUT" "$name" "$check"; then
        [[ $soft -eq 1 ]] && return 1    # caller diagnoses
        cat "$LOG_DIR/$name.stderr" >&2; fail "$name" "$logfile"
    fi
    log "$name up"
}
start_slurm_daemon slurmdbd "$PET_SLURM_DBD_PORT" "$DBD_PIDFILE" "$LOG_DIR/slurmdbd.log" dbd_ok

# ---------------------------------------------------------------- 4. cluster
if ! sacctmgr -n -P show cluster format=cluster | grep -qxF "$PET_SLURM_CLUSTER"; then
    sacctmgr -i add cluster "$PET_SLURM_CLUSTER" >/dev/null \
        || die "sacctmgr add cluster $PET_SLURM_CLUSTER failed"
    log "registered cluster '$PET_SLURM_CLUSTER' in slurmdbd"
fi

# ---------------------------------------------------------------- 5. slurmctld, 6. slurmd
start_slurm_daemon slurmctld "$PET_SLURM_CTLD_PORT" "$CTLD_PIDFILE" "$LOG_DIR/slurmctld.log" ctld_ok
# node_settled: registered and idle/busy, or in a bad state (diagnosed below)
node_settled() { [[ $(node_state) =~ ^(idle|mixed|allocated|completing|inval|drain|drained|draining)$ ]]; }
start_slurm_daemon --soft slurmd "$PET_SLURM_SLURMD_PORT" "$SLURMD_PIDFILE" "$LOG_DIR/slurmd.log" node_settled -N localhost \
    || true   # node not usable: diagnosed below

# ---------------------------------------------------------------- final checks
if ! node_idle; then
    st=$(node_state)
    if [[ $st =~ (down|drain|fail) ]]; then   # e.g. drained in a previous run (state is kept)
        reason=$(sinfo -h -n localhost -o '%E' 2>/dev/null)
        warn "node localhost is '$st' (reason: $reason) -- trying to resume it once"
        scontrol update nodename=localhost state=resume 2>/dev/null || true
        wait_for 15 node node_idle || true
    fi
fi
if ! node_idle; then
    sinfo -N -l >&2 || true
    log_tail "$LOG_DIR/slurmd.log"; log_tail "$LOG_DIR/slurmctld.log"
    die "node localhost is not idle (state '$(node_state)', reason '$(sinfo -h -n localhost -o %E 2>/dev/null)'); daemons left running for inspection, clean up with stop.sh"
fi
sacct_ok || { log_tail "$LOG_DIR/slurmdbd.log"; die "sacct does not work (slurmdbd accounting broken)"; }

if [[ $ALREADY -eq 5 ]]; then
    log "already running and healthy (cluster '$PET_SLURM_CLUSTER', state in $D)"
else
    log "Slurm is up after $(elapsed)s: cluster '$PET_SLURM_CLUSTER', node localhost CPUs=$CPUS RealMemory=${PET_SLURM_MEM_MB}M, partition debug"
fi
sinfo
[[ -z ${SLURM_CONF:-} ]] || log "non-default config dir: export SLURM_CONF=$SLURM_CONF in your shell"
