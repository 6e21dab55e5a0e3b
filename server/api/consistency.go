package api

import (
	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/store"
)

// checkConsistency validates a read's consistency requirement.
//
// NOTE: reads are served from the database itself, which already holds every committed change, so
// every requirement (a token included) is met by the read as it is. When nodes serve reads from
// their in-memory view, this is where a read waits for the view to reach the token.
func checkConsistency(c *gatehousev1.Consistency) error {
	tok := c.GetAtLeastAsFresh()
	if tok == "" {
		return nil
	}
	if _, err := store.ParseCursor(tok); err != nil {
		return errs.InvalidArgument("INVALID_CONSISTENCY_TOKEN", "consistency.at_least_as_fresh is not a consistency token",
			errs.FieldViolation{Field: "consistency.at_least_as_fresh", Description: "not a consistency_token returned by this service"})
	}
	return nil
}
