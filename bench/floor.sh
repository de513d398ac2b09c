#!/bin/sh
# The floor pyrelctl is measured against (python -m bench): the shortest
# hand-written deploy that does the same work, on a unit pyrelctl generated.
#
#   floor.sh upgrade  APP_DIR UNIT URL EXPECT VERSION ARTIFACT
#   floor.sh rollback APP_DIR UNIT URL EXPECT VERSION
#
# upgrade: tar x into APP_DIR/releases/VERSION; rollback: that directory is
# there already. Then both swap APP_DIR/current atomically (temp symlink +
# mv -T), restart UNIT, and poll URL until it answers EXPECT. No checks, no
# sync, no state, no rollback on failure: that is what pyrelctl adds.
set -eu
verb=$1 app_dir=$2 unit=$3 url=$4 expect=$5 version=$6

if [ "$verb" = upgrade ]; then
    mkdir "$app_dir/releases/$version"
    tar -xzf "$7" -C "$app_dir/releases/$version"
fi
ln -s "releases/$version" "$app_dir/current.tmp"
mv -T "$app_dir/current.tmp" "$app_dir/current"
# Deploys in quick succession trip the unit's start rate limit
# (StartLimitBurst=5 per 10 s, "start of the service was attempted too
# often"); pyrelctl resets it before each restart, and so must this.
systemctl reset-failed "$unit"
systemctl restart "$unit"
until [ "$(curl -fsS --max-time 1 "$url" 2>/dev/null)" = "$expect" ]; do
    sleep 0.002
done
