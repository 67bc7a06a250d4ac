#!/bin/bash
# Regenerates the chat-template reference outputs with transformers inside the Debian sid chroot
# (see ../../README and /work/shared/peer: sid-python runs python3 in the chroot, as root).
# Usage: tools/chat-template-reference/run-in-chroot.sh [path/to/sid-python]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
sid_python=${1:-sid-python}
root=${SID_ROOT:-/srv/sid-root}
fixtures=$repo/test/ML.Finetune.Tests/Chat/Fixtures
work=$root/tmp/chat-template-reference
rm -rf "$work"; mkdir -p "$work"
mkdir -p "$work/fixtures"
cp -r "$fixtures/templates" "$fixtures/sweep" "$fixtures/generation-templates" "$work/fixtures/"
cp "$fixtures/conversations.json" "$work/"
cp "$fixtures/jinja-snippets.json" "$work/fixtures/"
args=(--fixtures /tmp/chat-template-reference/fixtures --conversations /tmp/chat-template-reference/conversations.json)
"$sid_python" "$here/render_references.py" "${args[@]}"
"$sid_python" "$here/render_mask_references.py" "${args[@]}"
for d in references tiny-chat-tokenizer masks; do rm -rf "${fixtures:?}/$d"; cp -r "$work/fixtures/$d" "$fixtures/"; done
cp "$work/fixtures/sweep/expected.json" "$fixtures/sweep/"
cp "$work/fixtures/jinja-snippets.expected.json" "$fixtures/"
rm -rf "$work"
