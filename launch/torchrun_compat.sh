#!/usr/bin/env bash
# Sourced by train_multinode.sh: adapt to the torchrun that is installed.
#
# torchrun >= 2.9 forwards extra signals (--signals-to-handle, SIGUSR1 included) and newer ones
# take --shutdown-timeout; older ones (e.g. torch 2.6 in NGC 25.01) exit with "unrecognized
# arguments" on either flag, before any worker starts. So the flags are chosen from
# `torchrun --help`, and without --signals-to-handle the launcher forwards SIGUSR1 itself.

# torchrun_flags HELP_TEXT SHUTDOWN_TIMEOUT: print the stop-signal flags HELP_TEXT lists.
torchrun_flags() {
    local help_text="$1" shutdown_timeout="$2"
    if grep -q -- '--signals-to-handle' <<<"${help_text}"; then
        echo "--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1"
    fi
    if grep -q -- '--shutdown-timeout' <<<"${help_text}"; then
        echo "--shutdown-timeout=${shutdown_timeout}"
    fi
}

# torchrun_forwards_usr1 HELP_TEXT: whether that torchrun can forward SIGUSR1 to its workers.
torchrun_forwards_usr1() {
    grep -q -- '--signals-to-handle' <<<"$1"
}

# signal_children SIGNAL PID: send SIGNAL to every direct child of PID. torchrun starts each
# worker as its own child in a new session, so neither the process group of torchrun nor a
# signal to torchrun itself reaches them; /proc/*/stat gives the parent of every process.
signal_children() {
    local signal="$1" parent="$2" stat line fields
    for stat in /proc/[0-9]*/stat; do
        line="$(cat "${stat}" 2>/dev/null)" || continue
        # "pid (comm) state ppid ...": comm may hold spaces and parentheses, so cut at the last ")".
        read -r -a fields <<<"${line##*) }"
        if [[ "${fields[1]:-}" == "${parent}" ]]; then
            kill "-${signal}" "${line%% *}" 2>/dev/null || true
        fi
    done
}
