# Sourced by the scripts: puts the pinned build tools first on PATH.
# shellcheck shell=bash
export PATH="$PWD/tools/node_modules/.bin:$HOME/.cargo/bin:$PATH"
