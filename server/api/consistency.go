package api

import (
	"context"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/events"
)

// consistencyField is the request field of a read's consistency token.
const consistencyField = "consistency.at_least_as_fresh"

// readDatabase says how a read meets its consistency requirement (ARCHITECTURE.md section 6): it
// reports true when the read must go to the database itself (fully_consistent, or a token the
// node's view did not reach within the bounded wait), false when the node's view will do.
// A token that is not one, belongs to another database or names no event of this log (one from
// the future) is INVALID_ARGUMENT.
func readDatabase(ctx context.Context, live *events.Live, c *gatehousev1.Consistency) (bool, error) {
	switch r := c.GetRequirement().(type) {
	case *gatehousev1.Consistency_FullyConsistent:
		return r.FullyConsistent, nil
	case *gatehousev1.Consistency_AtLeastAsFresh:
		p, err := live.ParseToken(consistencyField, r.AtLeastAsFresh)
		if err != nil {
			return false, err
		}
		reached, err := live.AtLeast(ctx, consistencyField, p)
		if err != nil {
			return false, err
		}
		return !reached, nil
	}
	return false, nil
}
