#!/bin/sh
# The compose `pipeline` service, as the container runs it (the tests run this
# same script): initialise the database (roles included, so Grafana's login
# works), run the taxi demo once (its marker lives in MODELWATCH_HOME, a
# volume), then serve the schedule: every new file dropped in the incoming
# folder is run at each cron time.
set -eu

: "${MODELWATCH_DATABASE_URL:?set MODELWATCH_DATABASE_URL (docker-compose.yml builds it from .env)}"
home="${MODELWATCH_HOME:-/var/lib/modelwatch}"
incoming="${MODELWATCH_INCOMING_DIR:-$home/incoming}"
monitor="${MODELWATCH_SCHEDULE_MONITOR:-nyc_taxi}"
cron="${MODELWATCH_SCHEDULE_CRON:-0 6 * * *}"
export MODELWATCH_HOME="$home"
mkdir -p "$home" "$incoming"
# Empty means no Prefect server: `serve` then starts a temporary API of its own.
[ -n "${PREFECT_API_URL:-}" ] || unset PREFECT_API_URL

tries=0
until modelwatch init; do
  tries=$((tries + 1))
  if [ "$tries" -ge "${MODELWATCH_INIT_TRIES:-30}" ]; then
    echo "pipeline: the database stayed unreachable; giving up" >&2
    exit 3
  fi
  sleep 2
done

if [ "${MODELWATCH_DEMO:-1}" = 1 ] && [ ! -e "$home/demo.done" ]; then
  modelwatch demo
  touch "$home/demo.done"
fi

echo "pipeline: serving $monitor on '$cron' for files in $incoming"
exec modelwatch schedule --monitor "$monitor" --cron "$cron" --folder "$incoming"
