#!/bin/sh
# Renders an Alertmanager config of BillingWatch's (alertmanager.yml, or the billingwatch-route.yml
# snippet) for this site: keeps only the channels that are configured, so no notification goes
# to a channel that would fail on every alert, and fills in the outbound webhook and Discord
# URLs, which Alertmanager 0.25 cannot read from a file (newer releases can: `url_file`,
# `webhook_url_file`; the rendered config works on both). Prints the channels it kept, never a
# URL. POSIX sh, sed and awk only, so it runs on the host and inside the prom/alertmanager
# image (busybox).
#
#   render.sh                       write the rendered config, print its path
#   render.sh alertmanager [ARG...] render, then exec Alertmanager on it (a container entrypoint)
#
# A channel is kept when (all variables optional):
#   email    the SMTP server is set: SMTP_SMARTHOST if set (empty turns email off), else the
#            config's `smtp_smarthost:` line. SMTP_REQUIRE_TLS, if set, replaces `smtp_require_tls:`.
#   slack    BILLINGWATCH_SLACK_API_URL_FILE (default /etc/alertmanager/secrets/slack_api_url)
#            is a non-empty file; Alertmanager reads it, the config is pointed at it.
#   webhook  BILLINGWATCH_WEBHOOK_URL_FILE (default /etc/alertmanager/secrets/webhook_url) is
#            readable, else BILLINGWATCH_WEBHOOK_URL is set: the URL goes into the config.
#   discord  the same with BILLINGWATCH_DISCORD_WEBHOOK_URL_FILE (default
#            /etc/alertmanager/secrets/discord_webhook_url) and BILLINGWATCH_DISCORD_WEBHOOK_URL.
# A channel's blocks in the config end their first line with `# channel: NAME`.
#   ALERTMANAGER_CONFIG    source config (default: alertmanager.yml next to this script)
#   ALERTMANAGER_RENDERED  output (default /tmp/billingwatch-alertmanager.yml), mode 600
set -eu

here=$(cd "$(dirname "$0")" && pwd)
source_config=${ALERTMANAGER_CONFIG:-$here/alertmanager.yml}
rendered=${ALERTMANAGER_RENDERED:-/tmp/billingwatch-alertmanager.yml}
secrets=/etc/alertmanager/secrets

# read_url FILE FALLBACK: the first line of FILE if readable, else FALLBACK.
read_url() {
  if [ -r "$1" ]; then
    head -n 1 "$1" | tr -d '\r'
  else
    printf '%s' "$2"
  fi
}

# quoted VALUE: VALUE for a single-quoted YAML scalar (' doubles), escaped for a sed
# replacement (& \ and the | delimiter).
quoted() {
  printf '%s\n' "$1" | sed -e "s/'/''/g" -e 's/[&|\\]/\\&/g'
}

# checked_url NAME URL: URL for sed, after checking it is an HTTP(S) URL. Never echoes it.
checked_url() {
  case "$2" in
    http://*|https://*) quoted "$2" ;;
    *) echo "render.sh: the $1 URL must start with http:// or https://" >&2; exit 1 ;;
  esac
}

enabled=''
dropped=''
# The sed script, one command a line (values already escaped by `quoted`).
script=''
newline='
'

# Email: the SMTP server of the environment, else of the config.
if [ "${SMTP_SMARTHOST+set}" = set ]; then
  smarthost=$SMTP_SMARTHOST
  script="$script""s|^\\(  smtp_smarthost:\\).*|\\1 '$(quoted "$smarthost")'|$newline"
else
  smarthost=$(sed -n "s/^  smtp_smarthost: *//p" "$source_config" | tr -d "'\"" | head -n 1)
fi
if [ "${SMTP_REQUIRE_TLS+set}" = set ]; then
  case "$SMTP_REQUIRE_TLS" in
    true|false) script="$script""s|^\\(  smtp_require_tls:\\).*|\\1 $SMTP_REQUIRE_TLS|$newline" ;;
    *) echo "render.sh: SMTP_REQUIRE_TLS must be true or false" >&2; exit 1 ;;
  esac
fi
if [ -n "$smarthost" ]; then
  enabled="$enabled email(${smarthost%:*})"
else
  dropped="$dropped email"
fi

# Slack: Alertmanager reads the URL from its file at each notification.
slack_file=${BILLINGWATCH_SLACK_API_URL_FILE:-$secrets/slack_api_url}
if [ -s "$slack_file" ]; then
  enabled="$enabled slack"
  script="$script""s|$secrets/slack_api_url|$(quoted "$slack_file")|g$newline"
else
  dropped="$dropped slack"
fi

# Discord and the webhook: the URL goes into the rendered config in place of the placeholder.
discord=$(read_url "${BILLINGWATCH_DISCORD_WEBHOOK_URL_FILE:-$secrets/discord_webhook_url}" \
  "${BILLINGWATCH_DISCORD_WEBHOOK_URL:-}")
if [ -n "$discord" ]; then
  discord_sed=$(checked_url "Discord webhook" "$discord") || exit 1
  enabled="$enabled discord"
  script="$script""s|http://billingwatch-discord-webhook-url-not-set.invalid/|$discord_sed|g$newline"
else
  dropped="$dropped discord"
fi
webhook=$(read_url "${BILLINGWATCH_WEBHOOK_URL_FILE:-$secrets/webhook_url}" "${BILLINGWATCH_WEBHOOK_URL:-}")
if [ -n "$webhook" ]; then
  webhook_sed=$(checked_url webhook "$webhook") || exit 1
  enabled="$enabled webhook"
  script="$script""s|http://billingwatch-webhook-url-not-set.invalid/|$webhook_sed|g$newline"
else
  dropped="$dropped webhook"
fi

# Two steps, no pipe, so that a failing step stops the script (set -e) instead of leaving a
# half-rendered config; the intermediate files hold the URLs: private, and removed however it ends.
umask 077
trap 'rm -f "$rendered.sed" "$rendered.part"' EXIT
printf '%s' "$script" > "$rendered.sed"
sed -f "$rendered.sed" "$source_config" > "$rendered.part"
awk -v drop=" $dropped " '
  # Leave out each block whose first line ends with "# channel: NAME" for a dropped NAME: that
  # line and every following line indented deeper, blank, or a list item at its own indentation
  # (YAML lets a key'"'"'s list start there).
  function indent(line) { match(line, /^ */); return RLENGTH }
  skipping && ($0 ~ /^[ \t]*$/ || indent($0) > depth || (indent($0) == depth && $0 ~ /^ *- /)) { next }
  { skipping = 0 }
  match($0, /# channel: [a-z]+[ \t]*$/) {
    name = substr($0, RSTART + 11)
    sub(/[ \t]+$/, "", name)
    if (index(drop, " " name " ")) { skipping = 1; depth = indent($0); next }
  }
  { print }
' "$rendered.part" > "$rendered"
rm -f "$rendered.sed" "$rendered.part"

if [ -n "$enabled" ]; then
  echo "render.sh: receivers enabled:$enabled" >&2
else
  echo "render.sh: receivers enabled: none: alerts reach no one (docs/alert-delivery.md)" >&2
fi

if [ "$#" -eq 0 ]; then
  echo "$rendered"
else
  exec "$@" --config.file="$rendered"
fi
