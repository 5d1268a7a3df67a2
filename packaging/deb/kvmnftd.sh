#!/bin/sh
# /usr/bin/kvmnftd: the distribution's own node runs the installed build.
exec /usr/bin/node /usr/lib/kvmnftd/dist/cli/main.js "$@"
