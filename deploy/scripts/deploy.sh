#!/usr/bin/env bash
# `make deploy` (docs/deploy.md "What make deploy does"): apply OVERLAY with the image set to
# IMAGE:IMAGE_TAG, in three steps, each waited for: (1) everything but the services and the
# migration Job, (2) the Job, (3) the services. docs/deploy.md's production rollout runs the
# same kubectl commands in the same order (tests/deploy/test_kind_path.py compares them).
# Usage: KUBECTL="kubectl --context kind-shop" NAMESPACE=shop OVERLAY=deploy/k8s/kind \
#        IMAGE=shop-mesh IMAGE_TAG=dev PYTHON=python TIMEOUT=300 deploy.sh
set -euo pipefail
read -r -a kubectl <<<"${KUBECTL:-kubectl}"
k=("${kubectl[@]}" --namespace "${NAMESPACE:-shop}")
python="${PYTHON:-python3}"
timeout="${TIMEOUT:-300}"
timeout="${timeout%s}"  # seconds; "300s" as well

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
"$python" deploy/scripts/image_overlay.py "${OVERLAY:-deploy/k8s/kind}" \
    "${IMAGE:-shop-mesh}" "${IMAGE_TAG:-dev}" "$work/overlay"
overlay="$work/overlay"

# The Deployments that exist before this run: only those need a restart (a first deploy
# creates them with the image just loaded).
existing="$("${k[@]}" get deployment --selector app.kubernetes.io/component=grpc-service \
    --output name 2>/dev/null || true)"

echo "==> 1/3 namespace, settings, policies, NATS and PostgreSQL"
"${kubectl[@]}" apply -k "$overlay" --selector 'app.kubernetes.io/component notin (grpc-service,migration)'
"${k[@]}" rollout status statefulset --timeout "${timeout}s"

echo "==> 2/3 migrations (the Job is replaced: its pod template is immutable)"
"${k[@]}" delete job shop-migrate --ignore-not-found --wait
"${kubectl[@]}" apply -k "$overlay" --selector app.kubernetes.io/component=migration
# Complete or Failed, whichever comes first (kubectl wait takes one condition).
deadline=$((SECONDS + timeout))
while :; do
    state="$("${k[@]}" get job shop-migrate \
        --output 'jsonpath={range .status.conditions[?(@.status=="True")]}{.type} {end}' || true)"
    case " $state " in
        *" Complete "*) echo "job.batch/shop-migrate complete"; break ;;
        *" Failed "*) failed="failed" ;;
        *) failed="" ;;
    esac
    if [ -n "$failed" ] || [ "$SECONDS" -ge "$deadline" ]; then
        echo "error: the migration Job ${failed:-did not complete within ${timeout}s}; its logs:" >&2
        "${k[@]}" logs job/shop-migrate --all-containers --prefix --tail 50 >&2 || true
        exit 1
    fi
    sleep 2
done

echo "==> 3/3 services"
"${kubectl[@]}" apply -k "$overlay" --selector app.kubernetes.io/component=grpc-service
if [ -n "$existing" ]; then
    # The kind image keeps its tag (dev): restart so a freshly loaded build rolls out.
    # shellcheck disable=SC2086  # one name per word
    "${k[@]}" rollout restart $existing
fi
"${k[@]}" rollout status deployment/order deployment/credit deployment/payment --timeout "${timeout}s"
# rollout status returns while the old pods still drain (preStop, grace period): wait until
# they are gone, so what follows (make smoke) only meets the new ones.
terminating="$("${k[@]}" get pods --selector app.kubernetes.io/component=grpc-service \
    --output 'jsonpath={range .items[?(@.metadata.deletionTimestamp)]}pod/{.metadata.name} {end}')"
if [ -n "$terminating" ]; then
    # shellcheck disable=SC2086  # one name per word
    "${k[@]}" wait --for=delete $terminating --timeout "${timeout}s"
fi
echo "deployed ${IMAGE:-shop-mesh}:${IMAGE_TAG:-dev}"
