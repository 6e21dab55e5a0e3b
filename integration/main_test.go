// Package integration_test runs Gatehouse nodes on real listeners and real databases (SQLite files
// and a throwaway PostgreSQL cluster) and checks behaviour through every front.
package integration_test

import (
	"testing"

	"github.com/gatehouse/gatehouse/internal/testpg"
)

func TestMain(m *testing.M) { testpg.Main(m) }
