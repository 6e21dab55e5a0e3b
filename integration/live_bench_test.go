package integration_test

import (
	"fmt"
	"slices"
	"testing"
	"time"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/internal/testnode"
)

// BenchmarkPropagation measures the delay from the acknowledgement of a change on node A to the
// receipt of its push by a WatchSession on node B (two nodes on one PostgreSQL database), for
// GrantRole (roles_changed) and TerminateSession (terminated), at a steady 100 changes/s. It
// reports the median, the 99th percentile and the maximum in milliseconds; it asserts nothing.
//
//	go test -run '^$' -bench Propagation -benchtime 400x ./integration/
func BenchmarkPropagation(b *testing.B) {
	url := testnode.DatabaseURL(b, testnode.Postgres)
	na, nb := testnode.StartOn(b, url), testnode.StartOn(b, url)
	ga, gb := na.Client(testnode.GRPC), nb.Client(testnode.GRPC)
	admin := testnode.AdminToken(b, ga)
	testnode.MustCall[gatehousev1.CreateRoleResponse](b, ga, gatehousev1.IdentityService_CreateRole_FullMethodName, admin,
		&gatehousev1.CreateRoleRequest{Name: "bench"})
	for _, kind := range []string{"grant", "terminate"} {
		b.Run(kind, func(b *testing.B) {
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			var delays []time.Duration
			for i := 0; b.Loop(); i++ {
				name := fmt.Sprintf("p-%s-%d", kind, i)
				u := testnode.MustCall[gatehousev1.CreateUserResponse](b, ga, gatehousev1.IdentityService_CreateUser_FullMethodName, admin,
					&gatehousev1.CreateUserRequest{Username: name, Password: name + "-password"}).User
				sess := testnode.Login(b, gb, name, name+"-password")
				ch := liveWatchB(b, nb, sess.Token)
				<-tick.C
				if kind == "grant" {
					testnode.MustCall[gatehousev1.GrantRoleResponse](b, ga, gatehousev1.IdentityService_GrantRole_FullMethodName, admin,
						&gatehousev1.GrantRoleRequest{Role: "bench", Principal: &gatehousev1.GrantRoleRequest_UserId{UserId: u.Id}})
				} else {
					testnode.MustCall[gatehousev1.TerminateSessionResponse](b, ga, gatehousev1.SessionService_TerminateSession_FullMethodName, admin,
						&gatehousev1.TerminateSessionRequest{SessionId: sess.Session.Id})
				}
				start := time.Now()
				m := liveNext(b, ch, kind)
				delays = append(delays, time.Since(start))
				if (kind == "grant") != (m.resp.GetRolesChanged() != nil) {
					b.Fatalf("unexpected push %v %v", m.resp, m.err)
				}
			}
			slices.Sort(delays)
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
			b.ReportMetric(ms(delays[len(delays)/2]), "p50_ms")
			b.ReportMetric(ms(delays[len(delays)*99/100]), "p99_ms")
			b.ReportMetric(ms(delays[len(delays)-1]), "max_ms")
		})
	}
}

// liveWatchB opens a WatchSession over gRPC and returns its messages after the snapshot.
func liveWatchB(b *testing.B, n *testnode.Node, token string) <-chan liveMsg {
	ch := liveWatch(b, n, "grpc", token)
	if m := liveNext(b, ch, "snapshot"); m.resp.GetSnapshot() == nil {
		b.Fatalf("first message %v %v", m.resp, m.err)
	}
	return ch
}
