package session

import (
	"slices"
	"testing"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/policy"
)

// TestEvictions covers which sessions a login ends for the limits it exceeds under evict-oldest:
// each limit's oldest, and no more than it must, counting a session ended for one limit as freed
// for every other limit that counts it.
func TestEvictions(t *testing.T) {
	const (
		web = gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER
		mb  = gatehousev1.SessionType_SESSION_TYPE_MOBILE_BROWSER
		app = gatehousev1.SessionType_SESSION_TYPE_MOBILE_APP
	)
	everyone := &policy.Limit{Max: 2, CountedTypes: []gatehousev1.SessionType{web, mb, app}}
	apps := &policy.Limit{Max: 1, CountedTypes: []gatehousev1.SessionType{app}}
	webs := &policy.Limit{Max: 1, CountedTypes: []gatehousev1.SessionType{web}}
	for _, tc := range []struct {
		name string
		over []exceeded
		want []string
	}{
		{"one limit: its oldest, as many as its excess",
			[]exceeded{{everyone, []string{"w1", "m1", "a1"}, 2}}, []string{"w1", "m1"}},
		{"the narrow limit's session frees the wide one (whatever the order given)",
			[]exceeded{{everyone, []string{"w1", "a1"}, 1}, {apps, []string{"a1"}, 1}}, []string{"a1"}},
		{"the wide limit still needs more after the narrow one",
			[]exceeded{{everyone, []string{"w1", "m1", "a1"}, 2}, {apps, []string{"a1"}, 1}}, []string{"a1", "w1"}},
		{"disjoint limits each end their own oldest",
			[]exceeded{{apps, []string{"a1"}, 1}, {webs, []string{"w1"}, 1}}, []string{"a1", "w1"}},
		{"nothing exceeded", nil, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := evictions(tc.over); !slices.Equal(got, tc.want) {
				t.Errorf("evictions = %v, want %v", got, tc.want)
			}
		})
	}
}
