#!/usr/bin/env bash
# `make smoke`: port-forward the three Services, check gRPC health SERVING with grpcurl,
# then run the demo flow (scripts/demo.py: reject, top up, reserve, pay, refund).
# Usage: KUBECTL="kubectl -n shop" PYTHON=python GRPCURL=grpcurl smoke.sh ORDER CREDIT PAYMENT
set -euo pipefail
read -r -a kubectl <<<"${KUBECTL:-kubectl --namespace shop}"
python="${PYTHON:-python3}"
grpcurl="${GRPCURL:-grpcurl}"
ports=("${1:-15051}" "${2:-15052}" "${3:-15053}")
services=(order credit payment)
remote=(50051 50052 50053)
grpc_names=(shop.order.v1.OrderService shop.credit.v1.CreditService shop.payment.v1.PaymentService)

command -v "$grpcurl" >/dev/null || { echo "error: grpcurl not found (make venv)" >&2; exit 1; }
logs="$(mktemp -d)"
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    rm -rf "$logs"
}
trap cleanup EXIT

for i in 0 1 2; do
    "${kubectl[@]}" port-forward "service/${services[$i]}" "${ports[$i]}:${remote[$i]}" \
        >"$logs/${services[$i]}.log" 2>&1 &
    pids+=("$!")
done

for i in 0 1 2; do
    target="127.0.0.1:${ports[$i]}"
    for attempt in $(seq 1 30); do
        if status="$("$grpcurl" -plaintext -max-time 2 -d "{\"service\": \"${grpc_names[$i]}\"}" \
            "$target" grpc.health.v1.Health/Check 2>/dev/null)" &&
            grep -q SERVING <<<"$status"; then
            echo "${services[$i]}: SERVING (port-forward $target)"
            break
        fi
        if [ "$attempt" = 30 ]; then
            echo "error: ${services[$i]} is not SERVING at $target" >&2
            cat "$logs/${services[$i]}.log" >&2
            exit 1
        fi
        sleep 1
    done
done

ORDER_TARGET="127.0.0.1:${ports[0]}" CREDIT_TARGET="127.0.0.1:${ports[1]}" \
    PAYMENT_TARGET="127.0.0.1:${ports[2]}" MESH_DATA_DIR="$logs" \
    "$python" scripts/demo.py
echo "smoke test passed"
