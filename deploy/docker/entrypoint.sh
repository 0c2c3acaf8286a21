#!/bin/sh
# The image's entry point: `order|credit|payment [serve|migrate]`, or `drain [SECONDS]`
# (the pods' preStop hook).
# exec, so the service is PID 1 and receives SIGTERM itself (graceful shutdown).
set -eu
service="${1:-help}"
case "$service" in
    order | credit | payment)
        shift
        exec python -m "services.$service" "$@"
        ;;
    drain)
        # A pod's preStop: the service (PID 1) sets its gRPC health NOT_SERVING but keeps
        # serving; wait SECONDS for clients and endpoints to notice, then kubelet's SIGTERM.
        kill -USR1 1
        exec sleep "${2:-5}"
        ;;
    *)
        echo "usage: IMAGE order|credit|payment [serve|migrate]  |  drain [SECONDS]" >&2
        echo "  serve (default) runs the gRPC service; migrate applies its migrations and exits" >&2
        [ "$service" = help ] && exit 0
        exit 64
        ;;
esac
