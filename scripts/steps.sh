# Sourced by the reproduce scripts. step <label> <command...>: run it, then append its wall time
# to $STEP_LOG (one line per finished step, so a rerun's log shows what was redone).
step() {
    local label=$1 start=$SECONDS
    shift
    echo "== $label: $*"
    "$@"
    echo "$(date -u +%FT%TZ) $label $((SECONDS - start)) s" | tee -a "$STEP_LOG"
}
