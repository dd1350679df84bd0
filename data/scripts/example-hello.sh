#!/bin/sh
# Example EXTERNAL job script. labcron writes this file into the scripts directory of a new data
# directory on its first start; the repository's data/ (the default data directory of `cargo run`)
# ships it. Edit or delete it freely.
# A run gets a fresh working directory; what it writes to $LABCRON_RESULT_DIR is its result file,
# and its stdout and stderr are its log.
set -eu
echo "Hello from job '$LABCRON_JOB_NAME', run $LABCRON_RUN_ID"
printf 'run_id,generated_at\n%s,%s\n' "$LABCRON_RUN_ID" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    > "$LABCRON_RESULT_DIR/hello.csv"
