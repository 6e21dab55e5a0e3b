package integration_test

import (
	"testing"

	"github.com/gatehouse/gatehouse/internal/testnode"
)

// TestREADMEPreview runs the README's "What-if: preview a change" section as written on SQLite and
// PostgreSQL: the preview reports the impact, changes nothing, and a preview of a refused change is
// refused alike.
func TestREADMEPreview(t *testing.T) {
	script := readmeBlock(t, "# Preview: what would adding dana")
	for _, b := range testnode.Backends {
		t.Run(string(b), func(t *testing.T) {
			t.Parallel()
			out := runShell(t, onNode(script, readmeNode(t, testnode.DatabaseURL(t, b))))
			matchLines(t, "the preview section", out, []string{
				`\{"usersAffected":1,"added":\["ledger"\],"sessionsEnded":1,"endReason":"TERMINATION_REASON_ROLE_CHANGE"\}`,
				`\{"active":true,"roles":\[\]\}`,
				`\{"code":9,"reason":"LAST_ADMIN"\}`,
			})
		})
	}
}
