#!/usr/bin/env bash
# `make fuzz`: each target for FUZZTIME. A run fails when the target found
# something: a failing input written to testdata/fuzz/<Target>/. Go 1.26's
# fuzzing coordinator can also end a duration-bounded run with a bare
# "context deadline exceeded" when a worker misses the stop deadline on a
# busy machine (go.dev/issue/75804, fixed in Go 1.27): with no input written
# that is reported as the coordinator's flake, not as a finding.
set -uo pipefail
cd "$(dirname "$0")/.."
fuzztime=${FUZZTIME:-15s}
status=0
while read -r pkg target; do
	dir=$pkg/testdata/fuzz/$target
	before=$(ls "$dir" 2>/dev/null | sort)
	out=$(go test "$pkg" -run '^$' -fuzz "^$target\$" -fuzztime "$fuzztime" 2>&1)
	rc=$?
	echo "$out" | tail -n 4
	after=$(ls "$dir" 2>/dev/null | sort)
	if [ $rc -ne 0 ]; then
		if [ "$before" = "$after" ] && echo "$out" | grep -q 'context deadline exceeded' && ! echo "$out" | grep -q 'Failing input written'; then
			echo "fuzz: $target: the coordinator's stop deadline (go.dev/issue/75804), no input found; not a failure"
		else
			echo "fuzz: $target FAILED"
			echo "$out" | tail -n 30
			status=1
		fi
	fi
done <<'TARGETS'
./mcpauth FuzzAuthorizationHeader
./mcpauth FuzzToken
./mcpauth FuzzIntrospectionAnswer
./metadata FuzzCaddyfile
./stdiobridge FuzzScanTop
./stdiobridge FuzzLastEventID
./stdiobridge FuzzTranslateFast
./stdiobridge FuzzRequestState
./internal/mcpreq FuzzParse
./internal/mcpreq FuzzDifferential
./internal/jsonscan FuzzMembers
TARGETS
exit $status
