#!/usr/bin/env bash
# local_slurm.sh - wmhflow's test fixture: a REAL single-node SLURM cluster on this Debian 12 machine.
# Used by tests/test_slurm.py; also handy by hand (as root):
#
#   bash tests/slurm/local_slurm.sh start [--accounting] [--smoke]
#   bash tests/slurm/local_slurm.sh stop      # cancels the cluster's jobs, stops the daemons it started
#   bash tests/slurm/local_slurm.sh status
#
# start: installs the Debian packages slurmctld slurmd slurm-client munge if missing (apt-get; plus
#   slurmdbd mariadb-server with --accounting), writes /etc/slurm/{slurm,gres}.conf and job_submit.lua,
#   starts munged, (mariadbd + slurmdbd,) slurmctld and slurmd WITHOUT systemd (PID files under /run),
#   and waits until the node is idle. Idempotent: running it again only starts what is not running and
#   restarts the SLURM daemons whose configuration changed.
#
# The cluster (Debian 12 bookworm: slurm-wlm 22.05):
#   ClusterName=wmhflowci; controller and the one compute node on localhost (NodeName=localhost)
#   partitions: cpu (default) and gpu, both holding the node
#   GRES gpu:$WMHFLOW_SLURM_GPUS (default 1): FAKE GPUs whose device files are symlinks to /dev/null
#     (Slurm 22.05 drops a GPU GRES without File=). A job that asks for one gets CUDA_VISIBLE_DEVICES=0
#     and the GPU is really counted: a second GPU job waits for the first.
#   job_submit.lua: a GPU request outside partition gpu is rejected at sbatch time (as on clusters
#     whose GPU nodes are only in a GPU partition), so a mis-routed rule fails loudly.
#   EnforcePartLimits=ALL: a request larger than the node fails at sbatch time instead of pending forever.
#   no cgroups (proctrack/linuxproc, task/none): works in containers and microVMs.
#   MinJobAge=$WMHFLOW_SLURM_MIN_JOB_AGE (default 3600 s): finished jobs stay visible to squeue and
#     `scontrol show job` for that long. Without accounting that is (a) what snakemake's
#     `slurm-status-command: squeue` needs (>= 3 x slurm-init-seconds-before-status-checks) and (b) the
#     only record of where each job ran, which the test reads.
#   Without --accounting there is no slurmdbd: `sacct` fails, so the plugin needs
#     `slurm-status-command: squeue` (profiles/ci-slurm does that). With --accounting, `sacct` works and
#     account "$WMHFLOW_SLURM_ACCOUNT" (default ci) holds root (+ $SUDO_USER).
#
# Environment: WMHFLOW_SLURM_CPUS, WMHFLOW_SLURM_MEM_MB (default: what `slurmd -C` detects),
#   WMHFLOW_SLURM_GPUS, WMHFLOW_SLURM_WAIT (s to wait for the node, default 60),
#   WMHFLOW_SLURM_ACCOUNTING=1 (= --accounting), WMHFLOW_SLURM_ACCOUNT, WMHFLOW_SLURM_MIN_JOB_AGE.
# Exit codes: 0 ok, 1 failure, 2 usage, 3 not root, 4 packages missing and no apt-get, 5 apt-get failed.
# Adapted from the recipe in /work/shared/slurm/setup_local_slurm.sh.
set -euo pipefail

ACTION=start
SMOKE=0
ACCOUNTING="${WMHFLOW_SLURM_ACCOUNTING:-0}"
for a in "$@"; do
  case "$a" in
    start|stop|status) ACTION="$a" ;;
    --smoke) SMOKE=1 ;;
    --accounting) ACCOUNTING=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
    *) echo "unknown argument: $a" >&2; exit 2 ;;
  esac
done
[ "$(id -u)" -eq 0 ] || { echo "local_slurm.sh must run as root" >&2; exit 3; }

CONF_DIR=/etc/slurm
NODE=localhost
CLUSTER=wmhflowci
ACCOUNT="${WMHFLOW_SLURM_ACCOUNT:-ci}"
GPUS="${WMHFLOW_SLURM_GPUS:-1}"
WAIT_S="${WMHFLOW_SLURM_WAIT:-60}"
MIN_JOB_AGE="${WMHFLOW_SLURM_MIN_JOB_AGE:-3600}"
FAKE_GPU_DIR=/var/lib/slurm/fake-gpu
MUNGE_PID=/run/munge/munged.pid
MARIADB_PID=/run/mysqld/mysqld.pid
MARIADB_SOCK=/run/mysqld/mysqld.sock
DBD_PID=/run/slurmdbd.pid
CTLD_PID=/run/slurmctld.pid
SLURMD_PID=/run/slurmd.pid

log() { echo "[local_slurm] $*"; }
pid_alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop_pidfile() {  # name pidfile: stops exactly the daemon whose PID the file holds
  if pid_alive "$2"; then
    local pid; pid="$(cat "$2")"
    log "stopping $1 (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then kill -9 "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$2"
}
wait_for() {  # description tries(0.2 s each) command...
  local what="$1" n="$2"; shift 2
  for _ in $(seq 1 "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  echo "timed out waiting for $what" >&2; return 1
}

case "$ACTION" in
  stop)
    # cancel what is still queued or running on this cluster, so no job step outlives slurmd
    if pid_alive "$CTLD_PID" && command -v squeue >/dev/null; then
      jobs="$(squeue -h -o %i 2>/dev/null || true)"
      if [ -n "$jobs" ]; then
        log "cancelling jobs: $(echo $jobs)"
        scancel $jobs 2>/dev/null || true
        for _ in $(seq 1 50); do [ -z "$(squeue -h -t R,CG -o %i 2>/dev/null)" ] && break; sleep 0.2; done
      fi
    fi
    stop_pidfile slurmd "$SLURMD_PID"
    stop_pidfile slurmctld "$CTLD_PID"
    stop_pidfile slurmdbd "$DBD_PID"
    stop_pidfile mariadbd "$MARIADB_PID"
    stop_pidfile munged "$MUNGE_PID"
    exit 0 ;;
  status)
    rc=0
    for p in munged:$MUNGE_PID mariadbd:$MARIADB_PID slurmdbd:$DBD_PID slurmctld:$CTLD_PID slurmd:$SLURMD_PID; do
      if pid_alive "${p#*:}"; then log "${p%%:*} running (pid $(cat "${p#*:}"))"; else log "${p%%:*} not running"; fi
    done
    pid_alive "$CTLD_PID" && pid_alive "$SLURMD_PID" || rc=1
    if [ "$rc" = 0 ]; then sinfo -o "%P %a %D %t %G" || rc=1; fi
    exit "$rc" ;;
esac

T0=$(date +%s)

# ------------------------------------------------------------------ 1. packages
PKGS="slurmctld slurmd slurm-client munge"
[ "$ACCOUNTING" = 1 ] && PKGS="$PKGS slurmdbd mariadb-server"
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  command -v apt-get >/dev/null || { echo "missing packages:$missing, and no apt-get" >&2; exit 4; }
  log "apt-get install$missing"
  export DEBIAN_FRONTEND=noninteractive
  # no service may be started by the packages' postinst (no systemd here; we start the daemons below)
  added_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 0755 /usr/sbin/policy-rc.d; added_policy=1
  fi
  ok=1
  apt-get update -qq || ok=0
  [ "$ok" = 1 ] && { apt-get install -y -qq --no-install-recommends $missing >/dev/null || ok=0; }
  [ "$added_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
  [ "$ok" = 1 ] || { echo "apt-get install$missing failed" >&2; exit 5; }
fi
log "packages: slurm $(dpkg-query -W -f='${Version}' slurmctld), munge $(dpkg-query -W -f='${Version}' munge) ($(( $(date +%s) - T0 )) s)"

# ------------------------------------------------------------------ 2. munge
if [ ! -s /etc/munge/munge.key ]; then
  log "creating /etc/munge/munge.key"
  mungekey --create --keyfile=/etc/munge/munge.key --force
fi
chown munge:munge /etc/munge/munge.key && chmod 0400 /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
install -d -o munge -g munge -m 0700 /var/log/munge /var/lib/munge
if ! pid_alive "$MUNGE_PID"; then
  log "starting munged"
  runuser -u munge -- /usr/sbin/munged          # forks; writes $MUNGE_PID
fi
wait_for munged 50 bash -c 'munge -n | unmunge'

# ------------------------------------------------------------------ 3. configuration
install -d -m 0755 "$CONF_DIR"
install -d -o slurm -g slurm -m 0755 /var/lib/slurm /var/lib/slurm/slurmctld /var/log/slurm
install -d -o root -g root -m 0755 /var/lib/slurm/slurmd

HW="$(slurmd -C | head -1)"   # NodeName=.. CPUs=2 Boards=1 SocketsPerBoard=1 CoresPerSocket=2 ThreadsPerCore=1 RealMemory=24105
hw() { echo "$HW" | tr ' ' '\n' | sed -n "s/^$1=//p"; }
CPUS="${WMHFLOW_SLURM_CPUS:-$(hw CPUs)}"
MEM="${WMHFLOW_SLURM_MEM_MB:-$(hw RealMemory)}"
if [ -n "${WMHFLOW_SLURM_CPUS:-}" ]; then TOPO="CPUs=$CPUS"
else TOPO="CPUs=$CPUS Boards=$(hw Boards) SocketsPerBoard=$(hw SocketsPerBoard) CoresPerSocket=$(hw CoresPerSocket) ThreadsPerCore=$(hw ThreadsPerCore)"; fi

if [ "$ACCOUNTING" = 1 ]; then
  ACCT_CONF="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux"
else
  ACCT_CONF="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi
GRES_TYPES=""; GRES_NODE=""; SUBMIT_PLUGINS=""
if [ "$GPUS" -gt 0 ]; then GRES_TYPES="GresTypes=gpu"; GRES_NODE="Gres=gpu:$GPUS"; SUBMIT_PLUGINS="JobSubmitPlugins=lua"; fi

TMPD="$(mktemp -d)"; trap 'rm -rf "$TMPD"' EXIT
cat > "$TMPD/slurm.conf" <<EOF
# generated by wmhflow tests/slurm/local_slurm.sh: single-node test cluster
ClusterName=$CLUSTER
SlurmctldHost=localhost
SlurmUser=slurm
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=$CTLD_PID
SlurmdPidFile=$SLURMD_PID
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
$ACCT_CONF
JobCompType=jobcomp/none
MinJobAge=$MIN_JOB_AGE
EnforcePartLimits=ALL
$SUBMIT_PLUGINS
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=256
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
$GRES_TYPES
NodeName=$NODE NodeAddr=127.0.0.1 $TOPO RealMemory=$MEM $GRES_NODE State=UNKNOWN
PartitionName=cpu Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$NODE MaxTime=INFINITE State=UP
EOF
{
  echo "AutoDetect=off"
  if [ "$GPUS" -gt 0 ]; then
    install -d -m 0755 "$FAKE_GPU_DIR"
    last=$((GPUS - 1))
    for i in $(seq 0 "$last"); do ln -sfn /dev/null "$FAKE_GPU_DIR/gpu$i"; done
    if [ "$GPUS" -eq 1 ]; then files="$FAKE_GPU_DIR/gpu0"; else files="$FAKE_GPU_DIR/gpu[0-$last]"; fi
    echo "NodeName=$NODE Name=gpu Count=$GPUS File=$files"
  fi
} > "$TMPD/gres.conf"

cat > "$TMPD/job_submit.lua" <<'EOF'
-- generated by wmhflow tests/slurm/local_slurm.sh (slurm.conf: JobSubmitPlugins=lua):
-- GPUs may only be requested in partition "gpu". Rejected jobs fail at sbatch time.
function slurm_job_submit(job_desc, part_list, submit_uid)
   local req = (job_desc.tres_per_job or "") .. (job_desc.tres_per_node or "") ..
               (job_desc.tres_per_socket or "") .. (job_desc.tres_per_task or "")
   if string.find(req, "gpu", 1, true) and job_desc.partition ~= "gpu" then
      slurm.log_user("GPU requests are only allowed in partition 'gpu' (got partition '%s')",
                     tostring(job_desc.partition))
      return slurm.ERROR
   end
   return slurm.SUCCESS
end

function slurm_job_modify(job_desc, job_rec, part_list, modify_uid)
   return slurm.SUCCESS
end
EOF

SLURM_CHANGED=0
for f in slurm.conf gres.conf job_submit.lua; do
  if ! cmp -s "$TMPD/$f" "$CONF_DIR/$f"; then install -m 0644 "$TMPD/$f" "$CONF_DIR/$f"; SLURM_CHANGED=1; fi
done
if [ "$SLURM_CHANGED" = 1 ]; then
  log "wrote $CONF_DIR/slurm.conf, gres.conf, job_submit.lua (CPUs=$CPUS RealMemory=$MEM gpu=$GPUS accounting=$ACCOUNTING MinJobAge=$MIN_JOB_AGE)"
  stop_pidfile slurmd "$SLURMD_PID"; stop_pidfile slurmctld "$CTLD_PID"
fi

# ------------------------------------------------------------------ 4. accounting (optional)
if [ "$ACCOUNTING" = 1 ]; then
  install -d -o mysql -g mysql -m 0755 /run/mysqld
  if [ ! -d /var/lib/mysql/mysql ]; then
    log "initialising MariaDB data directory"
    mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
  fi
  if ! pid_alive "$MARIADB_PID"; then
    log "starting mariadbd (unix socket only)"
    # exec: no shell stays behind holding our stdout (a caller reading it would wait forever)
    (cd / && exec setsid /usr/sbin/mariadbd --user=mysql --datadir=/var/lib/mysql \
       --socket="$MARIADB_SOCK" --pid-file="$MARIADB_PID" --skip-networking \
       --innodb-buffer-pool-size=256M --innodb-lock-wait-timeout=900) \
       >>/var/log/slurm/mariadbd.log 2>&1 </dev/null &
  fi
  wait_for mariadbd 150 mysqladmin --socket="$MARIADB_SOCK" ping
  DBPASS=""
  if [ -f "$CONF_DIR/slurmdbd.conf" ]; then DBPASS="$(sed -n 's/^StoragePass=//p' "$CONF_DIR/slurmdbd.conf")"; fi
  DBPASS="${DBPASS:-$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')}"
  mysql --socket="$MARIADB_SOCK" -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY '$DBPASS';
    ALTER USER 'slurm'@'localhost' IDENTIFIED BY '$DBPASS';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  cat > "$TMPD/slurmdbd.conf" <<EOF
# generated by wmhflow tests/slurm/local_slurm.sh
AuthType=auth/munge
DbdHost=localhost
SlurmUser=slurm
PidFile=$DBD_PID
LogFile=/var/log/slurm/slurmdbd.log
DebugLevel=info
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=$DBPASS
EOF
  if ! cmp -s "$TMPD/slurmdbd.conf" "$CONF_DIR/slurmdbd.conf"; then
    install -o slurm -g slurm -m 0600 "$TMPD/slurmdbd.conf" "$CONF_DIR/slurmdbd.conf"   # 0600, owned by SlurmUser
    stop_pidfile slurmdbd "$DBD_PID"
  fi
  if ! pid_alive "$DBD_PID"; then
    log "starting slurmdbd"
    (cd / && /usr/sbin/slurmdbd)
  fi
  wait_for slurmdbd 150 sacctmgr -n list cluster
  sacctmgr -n -P list cluster format=cluster | grep -qx "$CLUSTER" || sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi

# ------------------------------------------------------------------ 5. slurmctld + slurmd
if ! pid_alive "$CTLD_PID"; then
  log "starting slurmctld"
  (cd / && /usr/sbin/slurmctld)                    # daemonizes, drops privileges to SlurmUser=slurm
fi
if ! wait_for slurmctld 100 bash -c 'scontrol ping | grep -q UP'; then
  tail -n 30 /var/log/slurm/slurmctld.log >&2; exit 1
fi
if ! pid_alive "$SLURMD_PID"; then
  log "starting slurmd"
  (cd / && /usr/sbin/slurmd -N "$NODE")            # -N: node name independent of the hostname
fi

# ------------------------------------------------------------------ 6. wait for an idle node
state=""
for i in $(seq 1 $((WAIT_S * 2))); do
  state="$(sinfo -h -n "$NODE" -o %T 2>/dev/null | head -1 || true)"
  case "$state" in
    idle|mixed|allocated|completing) break ;;
    *drain*|*down*|*inval*|*fail*)
      if [ $((i % 10)) -eq 1 ]; then scontrol update nodename="$NODE" state=resume >/dev/null 2>&1 || true; fi ;;
  esac
  sleep 0.5
done
case "$state" in
  idle|mixed|allocated|completing) ;;
  *) echo "node $NODE is not ready (state '$state')" >&2
     scontrol show node "$NODE" >&2 || true
     tail -n 30 /var/log/slurm/slurmd.log /var/log/slurm/slurmctld.log >&2 || true
     exit 1 ;;
esac

# ------------------------------------------------------------------ 7. accounts (optional)
if [ "$ACCOUNTING" = 1 ]; then
  sacctmgr -n -P list account format=account | grep -qx "$ACCOUNT" \
    || sacctmgr -i add account "$ACCOUNT" Cluster="$CLUSTER" Description=ci Organization=ci >/dev/null
  for u in root ${SUDO_USER:-}; do
    id "$u" >/dev/null 2>&1 || continue
    sacctmgr -n -P list assoc user="$u" account="$ACCOUNT" format=user | grep -qx "$u" \
      || sacctmgr -i add user "$u" Account="$ACCOUNT" DefaultAccount="$ACCOUNT" >/dev/null
  done
fi

sinfo -o "%P %a %l %D %t %G %N"
log "cluster ready after $(( $(date +%s) - T0 )) s"

# ------------------------------------------------------------------ 8. smoke tests (optional)
if [ "$SMOKE" = 1 ]; then
  d="$(mktemp -d)"
  log "smoke: srun -p cpu hostname"; srun -p cpu -n1 -t 1 hostname
  if [ "$GPUS" -gt 0 ]; then
    log "smoke: srun -p gpu --gpus=1"
    srun -p gpu --gpus=1 -t 1 bash -c 'echo "CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-unset}"'
    log "smoke: a GPU request in partition cpu must be rejected"
    if srun -p cpu --gpus=1 -t 1 true 2>/dev/null; then echo "GPU policy not active" >&2; exit 1; fi
  fi
  log "smoke: sbatch --wait"
  jid="$(cd "$d" && sbatch --parsable --wait -p cpu -t 1 -o "$d/out.txt" --wrap 'echo sbatch-ok')"
  cat "$d/out.txt"
  if [ "$ACCOUNTING" = 1 ]; then
    wait_for "sacct record of job $jid" 50 bash -c "sacct -n -X -j $jid -o State | grep -q COMPLETED"
    sacct -X -j "$jid" -o JobID,Partition,Account,State,ExitCode
  fi
  rm -rf "$d"
fi
