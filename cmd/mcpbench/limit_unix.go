//go:build unix

package main

import "syscall"

// descriptorLimit is this process's soft limit on open descriptors.
func descriptorLimit() int {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		return 0
	}
	return int(min(lim.Cur, 1<<30))
}
