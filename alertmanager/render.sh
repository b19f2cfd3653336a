#!/bin/sh
# Renders alertmanager.yml with the outbound webhook URL filled in, for Alertmanager 0.25, which
# cannot read that URL from a file (newer releases can: `url_file`). POSIX sh and sed only, so
# it runs on the host and inside the prom/alertmanager image (busybox).
#
#   render.sh                       write the rendered config, print its path
#   render.sh alertmanager [ARG...] render, then exec Alertmanager on it (a container entrypoint)
#
# Environment (all optional):
#   BILLINGWATCH_WEBHOOK_URL_FILE   file holding the webhook URL (default /etc/alertmanager/secrets/webhook_url)
#   BILLINGWATCH_WEBHOOK_URL        the URL itself, used when the file does not exist
#   ALERTMANAGER_CONFIG             source config (default: alertmanager.yml next to this script)
#   ALERTMANAGER_RENDERED           output (default /tmp/billingwatch-alertmanager.yml), mode 600
set -eu

here=$(cd "$(dirname "$0")" && pwd)
source_config=${ALERTMANAGER_CONFIG:-$here/alertmanager.yml}
rendered=${ALERTMANAGER_RENDERED:-/tmp/billingwatch-alertmanager.yml}
url_file=${BILLINGWATCH_WEBHOOK_URL_FILE:-/etc/alertmanager/secrets/webhook_url}
placeholder='http://billingwatch-webhook-url-not-set.invalid/'

if [ -r "$url_file" ]; then
  url=$(head -n 1 "$url_file" | tr -d '\r')
else
  url=${BILLINGWATCH_WEBHOOK_URL:-}
fi

umask 077
if [ -z "$url" ]; then
  echo "render.sh: no webhook URL ($url_file missing, BILLINGWATCH_WEBHOOK_URL unset): webhook notifications will fail" >&2
  cp "$source_config" "$rendered"
else
  case "$url" in
    http://*|https://*) ;;
    *) echo "render.sh: the webhook URL must start with http:// or https://" >&2; exit 1 ;;
  esac
  # The placeholder sits in single quotes in the YAML (so ' doubles), then escape what sed
  # treats specially in a replacement (& \ and the | delimiter). The URL is never echoed.
  escaped=$(printf '%s\n' "$url" | sed -e "s/'/''/g" -e 's/[&|\\]/\\&/g')
  sed "s|$placeholder|$escaped|g" "$source_config" > "$rendered"
fi

if [ "$#" -eq 0 ]; then
  echo "$rendered"
else
  exec "$@" --config.file="$rendered"
fi
