package integration_test

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
)

// TestExpiredSessionsDoNotValidate moves a session's idle or absolute expiry into the past in the
// database (instead of waiting for it) and checks that validation reports SESSION_EXPIRED.
func TestExpiredSessionsDoNotValidate(t *testing.T) {
	for _, b := range testnode.Backends {
		for _, column := range []string{"idle_expire_time", "absolute_expire_time"} {
			t.Run(string(b)+"/"+column, func(t *testing.T) {
				t.Parallel()
				n := testnode.Start(t, b)
				c := n.Client(testnode.GRPC)
				login := testnode.Login(t, c, "admin", testnode.AdminPassword)
				validate := func() error {
					_, err := testnode.Call[gatehousev1.ValidateSessionResponse](context.Background(), c,
						gatehousev1.SessionService_ValidateSession_FullMethodName, "", &gatehousev1.ValidateSessionRequest{Token: login.Token})
					return err
				}
				if err := validate(); err != nil {
					t.Fatalf("fresh session: %v", err)
				}
				st := n.Store()
				if _, err := st.DB.Exec(st.Rebind("UPDATE sessions SET "+column+" = ? WHERE id = ?"),
					time.Now().UTC().Add(-time.Second), login.Session.Id); err != nil {
					t.Fatal(err)
				}
				// NOTE: the node's view hears of changes through the event log, and this one was
				// made behind the node's back, so the read asks for the database.
				_, err := testnode.Call[gatehousev1.ValidateSessionResponse](context.Background(), c,
					gatehousev1.SessionService_ValidateSession_FullMethodName, "", &gatehousev1.ValidateSessionRequest{Token: login.Token,
						Consistency: &gatehousev1.Consistency{Requirement: &gatehousev1.Consistency_FullyConsistent{FullyConsistent: true}}})
				if status.Code(err) != codes.Unauthenticated || testnode.Reason(err) != "SESSION_EXPIRED" {
					t.Fatalf("expired session: %v (reason %q), want UNAUTHENTICATED SESSION_EXPIRED", err, testnode.Reason(err))
				}
			})
		}
	}
}
