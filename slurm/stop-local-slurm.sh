#!/usr/bin/env bash
# Stop the local single-node SLURM cluster started by slurm/start-local-slurm.sh.
#
# Only the pids recorded in $DMZ_SLURM_STATE/pids/ (default slurm/.local-cluster/pids/) are
# signalled, and only after /proc/<pid>/exe confirms the pid still is that program (never by
# name). Jobs still queued or running on the local cluster are cancelled first so that no
# slurmstepd is left behind. Backed-up /etc/slurm files (ones the start script did not write)
# are restored. The state (MariaDB datadir, slurmctld state, logs, DB password) is kept, so the
# next start is fast. Idempotent: stopping a stopped cluster is a no-op.
set -euo pipefail
trap '' PIPE

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BASE="${DMZ_SLURM_STATE:-$SCRIPT_DIR/.local-cluster}"
ETC=/etc/slurm
log() { echo "[stop-local-slurm] $*" >&2; }

if [[ ! -d "$BASE/pids" ]]; then
  echo "local slurm: nothing to stop (no state in $BASE)"
  exit 0
fi
BASE="$(cd "$BASE" && pwd)"
PIDS="$BASE/pids"

exec 9>"$BASE/.lock"
flock -w 120 9 || { log "ERROR: another start/stop holds $BASE/.lock"; exit 1; }

# shellcheck source=slurm/pids.sh
source "$SCRIPT_DIR/pids.sh"   # exe_names, pid_exe_is, our_pid

# Signal a group of our components together, wait (bounded) for all of them, SIGKILL stragglers.
stop_group() {
  local comps=("$@") c pid i
  local -A pids=()
  for c in "${comps[@]}"; do
    if pid="$(our_pid "$c")"; then
      pids[$c]=$pid
      kill -TERM "$pid" 2>/dev/null || true
    fi
  done
  (( ${#pids[@]} )) || return 0
  for (( i = 0; i < 300; i++ )); do   # 30 s
    local alive=0
    for c in "${!pids[@]}"; do pid_exe_is "${pids[$c]}" "$c" && alive=1; done
    (( alive )) || break
    sleep 0.1
  done
  for c in "${!pids[@]}"; do
    if pid_exe_is "${pids[$c]}" "$c"; then
      log "$c (pid ${pids[$c]}) ignored SIGTERM for 30 s: SIGKILL"
      kill -KILL "${pids[$c]}" 2>/dev/null || true
      for (( i = 0; i < 50; i++ )); do pid_exe_is "${pids[$c]}" "$c" || break; sleep 0.1; done
    fi
    log "stopped $c (pid ${pids[$c]})"
    rm -f "$PIDS/$c.pid"
  done
}

stopped_any=0
for c in slurmd slurmctld slurmdbd mariadbd munged; do
  our_pid "$c" >/dev/null && stopped_any=1
done

# Cancel what is left on our cluster while our slurmctld still answers.
if our_pid slurmctld >/dev/null && command -v squeue >/dev/null; then
  jobs="$(timeout 10 squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ' || true)"
  if [[ -n "${jobs// /}" ]]; then
    log "cancelling jobs still on the local cluster: $jobs"
    # shellcheck disable=SC2086
    timeout 10 scancel $jobs 2>/dev/null || true
    for (( i = 0; i < 150; i++ )); do   # up to 15 s (KillWait=10)
      [[ -z "$(timeout 5 squeue -h -o %A 2>/dev/null || true)" ]] && break
      sleep 0.1
    done
  fi
fi

stop_group slurmd slurmctld
stop_group slurmdbd
stop_group mariadbd munged

# Restore /etc/slurm files that were there before the start script wrote its own.
for name in slurm.conf slurmdbd.conf; do
  if [[ -e "$BASE/backup/$name" ]]; then
    log "restoring $ETC/$name from $BASE/backup/$name"
    cp -p "$BASE/backup/$name" "$ETC/$name"
    rm -f "$BASE/backup/$name"
  fi
done

# Report (never kill) leftovers.
left=""
for p in /proc/[0-9]*; do
  exe="$(readlink "$p/exe" 2>/dev/null || true)"
  case "$(basename "${exe% (deleted)}")" in
    slurmstepd|slurmstepd-wlm) left+=" ${p#/proc/}(slurmstepd)" ;;
  esac
done
[[ -z "$left" ]] || log "warning: slurmstepd processes still running:$left"

if (( stopped_any )); then
  echo "local slurm stopped"
else
  echo "local slurm: nothing to stop (no daemon of ours running)"
fi
