//go:build !unix

package mcpserver

func ignoreTerm() {}
