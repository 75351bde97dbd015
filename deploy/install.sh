#!/usr/bin/env bash
# Install carcelery's services on this host from this checkout, which must be
# /opt/carcelery (the units run it from there). As root, once
# /etc/carcelery/carcelery.env holds the settings (see deploy/carcelery.env):
#
#   deploy/install.sh a    # Instance A: worker A, the beat, Flower (and the dispatch unit)
#   deploy/install.sh b    # Instance B: worker B, and the drain at scale-in (deploy/drain.py)
#
# Needs python3.11 or newer (PYTHON=python3.12 to choose), openssl, and npm for
# the local recognizer's weights. Running it again updates and restarts.
set -euo pipefail

home=/opt/carcelery
env_file=/etc/carcelery/carcelery.env
case "${1:-}" in
  a) units=(carcelery-worker-a carcelery-beat carcelery-flower) ;;
  b) units=(carcelery-worker-b carcelery-drain) ;;
  *) echo "usage: deploy/install.sh a|b" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/.."
if [ "$PWD" != "$home" ]; then
  echo "error: the units run the project from $home; clone it there (this is $PWD)" >&2
  exit 2
fi
if [ ! -f "$env_file" ]; then
  echo "error: no $env_file; copy deploy/carcelery.env there and edit it" >&2
  exit 2
fi
chmod 600 "$env_file"

"${PYTHON:-python3.11}" -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
.venv/bin/python -m pip install --quiet --disable-pip-version-check --no-deps --editable .
id carcelery >/dev/null 2>&1 ||
  useradd --system --home-dir /var/lib/carcelery --no-create-home --shell /usr/sbin/nologin carcelery
install -d -o carcelery -g carcelery -m 0755 /var/lib/carcelery

# Flower's password is made here, on the host: it is in no template, log or repository.
if [ "$1" = a ] && ! grep -q '^CARCELERY_FLOWER_PASSWORD=' "$env_file"; then
  echo "CARCELERY_FLOWER_PASSWORD=$(openssl rand -hex 16)" >>"$env_file"
fi
if grep -q '^CARCELERY_RECOGNIZER=local' "$env_file"; then
  # The local detector's weights, as the workers' user, into CARCELERY_MODEL_DIR.
  set -a
  # shellcheck source=deploy/carcelery.env
  . "$env_file"
  set +a
  runuser -u carcelery -- .venv/bin/python -m carcelery.recognizers.weights
fi

install -m 0644 deploy/systemd/carcelery-*.service /etc/systemd/system/
systemctl daemon-reload
systemctl enable "${units[@]}"
systemctl restart "${units[@]}"
