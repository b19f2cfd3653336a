#!/bin/sh
# Renders alertmanager.yml with the outbound webhook and Discord webhook URLs filled in, for
# Alertmanager 0.25, which cannot read those URLs from a file (newer releases can: `url_file`,
# `webhook_url_file`). POSIX sh and sed only, so it runs on the host and inside the
# prom/alertmanager image (busybox).
#
#   render.sh                       write the rendered config, print its path
#   render.sh alertmanager [ARG...] render, then exec Alertmanager on it (a container entrypoint)
#
# Environment (all optional):
#   BILLINGWATCH_WEBHOOK_URL_FILE          file holding the webhook URL (default /etc/alertmanager/secrets/webhook_url)
#   BILLINGWATCH_WEBHOOK_URL               the URL itself, used when the file does not exist
#   BILLINGWATCH_DISCORD_WEBHOOK_URL_FILE  file holding the Discord webhook URL
#                                          (default /etc/alertmanager/secrets/discord_webhook_url)
#   BILLINGWATCH_DISCORD_WEBHOOK_URL       the Discord URL itself, used when the file does not exist
#   ALERTMANAGER_CONFIG                    source config (default: alertmanager.yml next to this script)
#   ALERTMANAGER_RENDERED                  output (default /tmp/billingwatch-alertmanager.yml), mode 600
set -eu

here=$(cd "$(dirname "$0")" && pwd)
source_config=${ALERTMANAGER_CONFIG:-$here/alertmanager.yml}
rendered=${ALERTMANAGER_RENDERED:-/tmp/billingwatch-alertmanager.yml}

# read_url FILE FALLBACK: the first line of FILE if readable, else FALLBACK.
read_url() {
  if [ -r "$1" ]; then
    head -n 1 "$1" | tr -d '\r'
  else
    printf '%s' "$2"
  fi
}

# replacement NAME URL PLACEHOLDER: what sed puts in place of PLACEHOLDER. Without a URL, the
# placeholder itself (so the config is unchanged) and a warning naming the channel.
replacement() {
  if [ -z "$2" ]; then
    echo "render.sh: no $1 URL: $1 notifications will fail" >&2
    printf '%s' "$3"
    return
  fi
  case "$2" in
    http://*|https://*) ;;
    *) echo "render.sh: the $1 URL must start with http:// or https://" >&2; exit 1 ;;
  esac
  # The placeholder sits in single quotes in the YAML (so ' doubles), then escape what sed
  # treats specially in a replacement (& \ and the | delimiter). The URL is never echoed.
  printf '%s\n' "$2" | sed -e "s/'/''/g" -e 's/[&|\\]/\\&/g'
}

webhook_placeholder='http://billingwatch-webhook-url-not-set.invalid/'
discord_placeholder='http://billingwatch-discord-webhook-url-not-set.invalid/'
webhook=$(read_url "${BILLINGWATCH_WEBHOOK_URL_FILE:-/etc/alertmanager/secrets/webhook_url}" \
  "${BILLINGWATCH_WEBHOOK_URL:-}")
discord=$(read_url "${BILLINGWATCH_DISCORD_WEBHOOK_URL_FILE:-/etc/alertmanager/secrets/discord_webhook_url}" \
  "${BILLINGWATCH_DISCORD_WEBHOOK_URL:-}")
webhook_sed=$(replacement webhook "$webhook" "$webhook_placeholder") || exit 1
discord_sed=$(replacement "Discord webhook" "$discord" "$discord_placeholder") || exit 1

umask 077
sed -e "s|$webhook_placeholder|$webhook_sed|g" -e "s|$discord_placeholder|$discord_sed|g" \
  "$source_config" > "$rendered"

if [ "$#" -eq 0 ]; then
  echo "$rendered"
else
  exec "$@" --config.file="$rendered"
fi
