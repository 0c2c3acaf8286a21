#!/bin/sh
# The image's entry point: `order|credit|payment [serve|migrate]`.
# exec, so the service is PID 1 and receives SIGTERM itself (graceful shutdown).
set -eu
service="${1:-help}"
case "$service" in
    order | credit | payment)
        shift
        exec python -m "services.$service" "$@"
        ;;
    *)
        echo "usage: IMAGE order|credit|payment [serve|migrate]" >&2
        echo "  serve (default) runs the gRPC service; migrate applies its migrations and exits" >&2
        [ "$service" = help ] && exit 0
        exit 64
        ;;
esac
