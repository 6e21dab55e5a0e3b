package convert_test

import (
	"slices"
	"testing"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/convert"
)

func TestMaskPaths(t *testing.T) {
	if got := convert.MaskPaths(nil, "id"); got != nil {
		t.Errorf("nil mask = %v, want nil (no mask: the caller decides)", got)
	}
	if got := convert.MaskPaths([]string{}, "id"); got == nil || len(got) != 0 {
		t.Errorf("empty mask = %#v, want empty and non-nil (change nothing)", got)
	}
	got := convert.MaskPaths([]string{"displayName", "display_name", "id", "createTime", "email"}, "id", "create_time")
	if want := []string{"display_name", "email"}; !slices.Equal(got, want) {
		t.Errorf("MaskPaths = %v, want %v", got, want)
	}
}

func TestPopulatedPaths(t *testing.T) {
	fields := []string{"username", "email", "display_name", "disabled", "no_such_field"}
	for _, tc := range []struct {
		name string
		user *gatehousev1.User
		want []string
	}{
		{"nil user", nil, []string{}},
		{"id only", &gatehousev1.User{Id: "x"}, []string{}},
		{"defaults are not populated", &gatehousev1.User{Id: "x", Email: "", Disabled: false}, []string{}},
		{"in the order asked", &gatehousev1.User{Disabled: true, DisplayName: "D", Username: "u"}, []string{"username", "display_name", "disabled"}},
	} {
		got := convert.PopulatedPaths(tc.user, fields...)
		if got == nil || !slices.Equal(got, tc.want) {
			t.Errorf("%s: PopulatedPaths = %#v, want %#v (non-nil)", tc.name, got, tc.want)
		}
	}
}

func TestSessionTypesRoundTrip(t *testing.T) {
	for v := range gatehousev1.SessionType_name {
		typ := gatehousev1.SessionType(v)
		st, ok := convert.SessionTypeToStore(typ)
		if typ == gatehousev1.SessionType_SESSION_TYPE_UNSPECIFIED {
			if ok {
				t.Error("unspecified must not convert")
			}
			continue
		}
		if !ok || convert.SessionTypeFromStore(st) != typ {
			t.Errorf("%v does not round-trip", typ)
		}
	}
}

func TestKeyAndIDs(t *testing.T) {
	if convert.Key("Alice.Smith@Example") != "alice.smith@example" {
		t.Error("Key must lower-case")
	}
	a, b := convert.NewID(), convert.NewID()
	if a == b || len(a) != 36 || a[14] != '7' || b < a {
		t.Errorf("ids %s, %s: want distinct, increasing UUIDv7", a, b)
	}
}
