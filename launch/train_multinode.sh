#!/usr/bin/env bash
# Start this node's share of a multi-node training run: one torchrun, NPROC_PER_NODE workers.
# Run the same command on every node (only NODE_RANK differs); the nodes meet at a c10d
# rendezvous hosted on MASTER_ADDR:MASTER_PORT.
#
#   # node 0 (10.0.0.1) and node 1, 8 GPUs each:
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 NPROC_PER_NODE=8 launch/train_multinode.sh \
#       --config configs/q3.yaml data.shards=/data/shards train.run_dir=/shared/runs/q3
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 NPROC_PER_NODE=8 launch/train_multinode.sh \
#       --config configs/q3.yaml data.shards=/data/shards train.run_dir=/shared/runs/q3
#
# Environment (defaults in brackets):
#   NNODES [1]           number of nodes
#   NODE_RANK [$SLURM_NODEID, else 0]  this node's index; c10d assigns the final order itself,
#                        so it only labels logs (any distinct values work)
#   MASTER_ADDR [127.0.0.1]  host of the rendezvous (any node that all others can reach)
#   MASTER_PORT [29500]  its TCP port (0 with NNODES=1: a free port, chosen at bind time)
#   NPROC_PER_NODE [visible GPUs, or 1 without GPUs]  worker processes on this node
#   RDZV_ID [jicd]       run identifier; all nodes of one run must use the same value
#   TORCHRUN [torchrun]  torchrun executable (e.g. .venv/bin/torchrun)
#   SHUTDOWN_TIMEOUT [90]  seconds workers get to checkpoint after SIGTERM/SIGUSR1 (torchrun
#                        versions with --shutdown-timeout; older ones allow 30 s after SIGTERM)
# Arguments are passed to launch/train.py (--config FILE and key=value overrides); train.run_dir
# must be on storage shared by all nodes.
#
# Exit status: 0 when training finished, and 0 after a stop signal (SIGUSR1, SIGTERM, SIGINT,
# SIGHUP sent to this script) when every worker of this node then checkpointed and exited 0;
# otherwise torchrun's status (non-zero).
set -euo pipefail

gpu_count() {
    # Visible GPUs: CUDA_VISIBLE_DEVICES when set (schedulers restrict it), else every GPU that
    # nvidia-smi lists; no driver means a CPU node.
    if [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]]; then
        tr ',' '\n' <<<"${CUDA_VISIBLE_DEVICES}" | grep -c . || true
    elif command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi -L 2>/dev/null | grep -c '^GPU' || true
    else
        echo 0
    fi
}

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
nproc_per_node="${NPROC_PER_NODE:-$(gpu_count)}"
if [[ "${nproc_per_node}" -lt 1 ]]; then
    nproc_per_node=1
fi

# SIGUSR1 is what Slurm sends before a time limit or pre-emption: torchrun must forward it to the
# workers (its default list has only TERM/INT/HUP/QUIT) so that they checkpoint and exit. Only
# flags this torchrun knows are passed (launch/torchrun_compat.sh).
# shellcheck disable=SC1091  # a file beside this script, linted on its own
source "${repo_root}/launch/torchrun_compat.sh"
torchrun="${TORCHRUN:-torchrun}"
help_text="$("${torchrun}" --help 2>&1 || true)"
mapfile -t signal_flags < <(torchrun_flags "${help_text}" "${SHUTDOWN_TIMEOUT:-90}")
args=(
    --nnodes="${NNODES:-1}"
    --node-rank="${NODE_RANK:-${SLURM_NODEID:-0}}"
    --nproc-per-node="${nproc_per_node}"
    --rdzv-backend=c10d
    --rdzv-endpoint="${MASTER_ADDR:-127.0.0.1}:${MASTER_PORT:-29500}"
    --rdzv-id="${RDZV_ID:-jicd}"
    --max-restarts=0
    "${signal_flags[@]}"
    "${repo_root}/launch/train.py" "$@"
)
# torchrun stays a child of this shell. A torchrun that forwards signals itself (>= 2.9) exits 1
# with a SignalException after forwarding one, even when every worker checkpointed and exited 0;
# an older one does not forward SIGUSR1 at all, so this shell hands it to the workers. Either way
# the exit status is decided below from what the workers report, not from torchrun's status.
forwards_usr1=0
if torchrun_forwards_usr1 "${help_text}"; then
    forwards_usr1=1
else
    echo "train_multinode.sh: ${torchrun} has no --signals-to-handle; forwarding SIGUSR1 itself" >&2
fi
# Each worker that ends cleanly (checkpoint written) leaves worker-<local rank>.json here.
JICD_EXIT_REPORT_DIR="$(mktemp -d "${TMPDIR:-/tmp}/jicd-exit.XXXXXX")"
export JICD_EXIT_REPORT_DIR
trap 'rm -rf "${JICD_EXIT_REPORT_DIR}"' EXIT
stop_signal=""

# shellcheck disable=SC2317,SC2329  # called by the traps below
on_signal() {
    stop_signal="$1"
    if [[ "$1" == USR1 && "${forwards_usr1}" -eq 0 ]]; then
        signal_children USR1 "${torchrun_pid}"
    else
        kill "-$1" "${torchrun_pid}" 2>/dev/null || true
    fi
}

"${torchrun}" "${args[@]}" &
torchrun_pid=$!
for sig in USR1 TERM INT HUP; do
    # shellcheck disable=SC2064  # expand ${sig} now: one trap per signal
    trap "on_signal ${sig}" "${sig}"
done
# `wait` returns early (128 + signal) whenever a trapped signal arrives: wait until torchrun has
# exited, then ask once more, which gives torchrun's own exit status.
while kill -0 "${torchrun_pid}" 2>/dev/null; do
    wait "${torchrun_pid}" || true
done
status=0
wait "${torchrun_pid}" || status=$?

clean_workers=$(find "${JICD_EXIT_REPORT_DIR}" -name 'worker-*.json' | wc -l)
if [[ "${status}" -ne 0 && -n "${stop_signal}" && "${clean_workers}" -eq "${nproc_per_node}" ]]; then
    echo "train_multinode.sh: stopped by SIG${stop_signal}: all ${nproc_per_node} worker(s) of" \
        "this node checkpointed and exited 0 (torchrun's own status ${status} ignored)" >&2
    exit 0
fi
if [[ -n "${stop_signal}" && "${status}" -ne 0 ]]; then
    echo "train_multinode.sh: stopped by SIG${stop_signal}, but only ${clean_workers} of" \
        "${nproc_per_node} worker(s) checkpointed and exited cleanly: exit ${status}" >&2
fi
exit "${status}"
