//go:build !unix

package main

// descriptorLimit is unknown here (0).
func descriptorLimit() int { return 0 }
