package server_test

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if a goroutine outlives them: a node's servers, handlers,
// sweeper and tailer must all have returned once Shutdown has.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
