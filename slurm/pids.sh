# Pid bookkeeping shared by start-local-slurm.sh and stop-local-slurm.sh (sourced, not run).
# The caller sets PIDS (the folder of <component>.pid files) and defines log().
# A recorded pid counts as ours only while /proc/<pid>/exe is that component's program: daemons are
# never found or signalled by name.

# Allowed executable basenames per component (Debian installs slurmctld/slurmd through
# alternatives as *-wlm).
exe_names() {
  case "$1" in
    munged) echo "munged" ;;
    mariadbd) echo "mariadbd mysqld" ;;
    slurmdbd) echo "slurmdbd slurmdbd-wlm" ;;
    slurmctld) echo "slurmctld slurmctld-wlm" ;;
    slurmd) echo "slurmd slurmd-wlm" ;;
  esac
}

pid_exe_is() {  # pid_exe_is <pid> <component>
  local exe n
  exe="$(readlink "/proc/$1/exe" 2>/dev/null)" || return 1
  exe="$(basename "${exe% (deleted)}")"
  for n in $(exe_names "$2"); do [[ "$exe" == "$n" ]] && return 0; done
  return 1
}

our_pid() {  # prints the recorded pid of <component> if it is alive and still that program
  local f="$PIDS/$1.pid" pid
  [[ -f "$f" ]] || return 1
  pid="$(cat "$f" 2>/dev/null)"
  if [[ "$pid" =~ ^[0-9]+$ ]] && pid_exe_is "$pid" "$1"; then echo "$pid"; return 0; fi
  [[ -n "$pid" ]] && log "$1: recorded pid $pid is gone or no longer $1; dropping its pid file"
  rm -f "$f"
  return 1
}
