//go:build !linux

package main

import (
	"errors"
	"os/exec"
)

// serverStart: pinning is Linux-only (bench.sh pins only where taskset is).
func serverStart(cpus string) (func(*exec.Cmd) error, error) {
	if cpus == "" {
		return nil, nil
	}
	return nil, errors.New("BENCH_SERVER_CPUS is supported on Linux only")
}
