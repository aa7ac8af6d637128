package main

import (
	"fmt"
	"os/exec"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// serverStart returns how the direct-stdio rows start their children: on
// the servers' CPUs (BENCH_SERVER_CPUS, taskset's list syntax) where the
// servers are pinned, as the bridge's children are, without a taskset
// process in between (which would make every spawn, and so the limit,
// slower). The starting thread takes those CPUs for the fork, which the
// child inherits, and gets its own back.
func serverStart(cpus string) (func(*exec.Cmd) error, error) {
	if cpus == "" {
		return nil, nil
	}
	var set unix.CPUSet
	for _, part := range strings.Split(cpus, ",") {
		lo, hi, ok := strings.Cut(part, "-")
		if !ok {
			hi = lo
		}
		a, err1 := strconv.Atoi(lo)
		b, err2 := strconv.Atoi(hi)
		if err1 != nil || err2 != nil || a > b {
			return nil, fmt.Errorf("BENCH_SERVER_CPUS %q: not a CPU list", cpus)
		}
		for c := a; c <= b; c++ {
			set.Set(c)
		}
	}
	return func(cmd *exec.Cmd) error {
		runtime.LockOSThread()
		var own unix.CPUSet
		if err := unix.SchedGetaffinity(0, &own); err != nil {
			runtime.UnlockOSThread()
			return err
		}
		if err := unix.SchedSetaffinity(0, &set); err != nil {
			runtime.UnlockOSThread()
			return err
		}
		err := cmd.Start()
		// a thread whose CPUs could not be given back stays locked, and
		// ends with this goroutine
		if unix.SchedSetaffinity(0, &own) == nil {
			runtime.UnlockOSThread()
		}
		return err
	}, nil
}
