package mcpauth

import (
	"testing"

	"github.com/caddymcp/caddymcp/internal/adapttest"
)

func TestAdapt(t *testing.T) { adapttest.Run(t, "testdata") }
