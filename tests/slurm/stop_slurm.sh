#!/usr/bin/env bash
# Stop the single-node Slurm started by tests/slurm/start_slurm.sh: cancels its jobs, then stops
# slurmd, slurmctld and munged by the PIDs recorded in STATE_DIR. Never touches other processes.
# Idempotent: nothing running -> says so and exits 0. Logs stay in STATE_DIR/log.
#
#   tests/slurm/stop_slurm.sh [STATE_DIR]       # default: $THROMBSEG_SLURM_DIR or /tmp/thrombseg-slurm
set -uo pipefail

DIR="${1:-${THROMBSEG_SLURM_DIR:-/tmp/thrombseg-slurm}}"
log() { echo "[stop_slurm] $*" >&2; }
if [[ ! -d $DIR ]]; then
  log "nothing to stop ($DIR does not exist)"
  exit 0
fi
export SLURM_CONF="$DIR/slurm.conf"

pid_of() { [[ -s "$DIR/$1.pid" ]] && cat "$DIR/$1.pid"; }
alive() { [[ -n ${1:-} ]] && kill -0 "$1" 2>/dev/null; }

stop_pid() {  # name pid: SIGTERM, wait up to 10 s, then SIGKILL
  local name=$1 pid=${2:-}
  if ! alive "$pid"; then return 0; fi
  # Only signal the process if it really is the daemon we started (PIDs can be reused).
  if ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "$name"; then
    log "PID $pid is no longer $name; leaving it alone"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
  if alive "$pid"; then
    log "$name ($pid) ignored SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null
  fi
  log "stopped $name (PID $pid)"
}

ctld=$(pid_of slurmctld || true)
if alive "$ctld" && [[ -f $SLURM_CONF ]]; then
  # Cancel what is still queued/running on this test cluster so no job step outlives slurmd.
  if [[ -n $(squeue -h -o %i 2>/dev/null) ]]; then
    log "cancelling remaining jobs: $(squeue -h -o %i | tr '\n' ' ')"
    scancel --full $(squeue -h -o %i) 2>/dev/null
    for _ in $(seq 50); do
      [[ -z $(squeue -h -t PD,R,CG,S -o %i 2>/dev/null) ]] && break
      sleep 0.2
    done
  fi
fi

stop_pid slurmd "$(pid_of slurmd || true)"
stop_pid slurmctld "$ctld"
stop_pid munged "$(pid_of munged || true)"
rm -f "$DIR/pids"
log "done (logs kept in $DIR/log)"
exit 0
