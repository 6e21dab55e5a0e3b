package transport_test

import (
	"testing"

	"google.golang.org/protobuf/proto"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/server/errs"
	"github.com/gatehouse/gatehouse/server/transport"
)

// TestValidateRefusesNUL: a string holding U+0000, which protobuf allows and PostgreSQL text does
// not, is INVALID_ARGUMENT naming its field, at any depth; the same request without it is valid.
func TestValidateRefusesNUL(t *testing.T) {
	for _, tt := range []struct {
		msg   proto.Message
		field string
	}{
		{&gatehousev1.CreateUserRequest{Username: "ada", DisplayName: "Ada\x00"}, "display_name"},
		{&gatehousev1.UpdateUserRequest{User: &gatehousev1.User{Id: "0190a6c4-0000-7000-8000-000000000001", DisplayName: "\x00"}}, "user.display_name"},
		{&gatehousev1.CreateSessionRequest{
			Credential: &gatehousev1.CreateSessionRequest_Impersonate{Impersonate: &gatehousev1.ImpersonateCredential{Username: "ada", Reason: "ticket\x0042"}},
			Type:       gatehousev1.SessionType_SESSION_TYPE_WEB_BROWSER,
		}, "impersonate.reason"},
	} {
		err := transport.Validate(tt.msg)
		e, ok := errs.As(err)
		if !ok || e.Kind != errs.KindInvalidArgument || len(e.Violations) != 1 || e.Violations[0].Field != tt.field {
			t.Errorf("%T: %v, want INVALID_ARGUMENT naming %s", tt.msg, err, tt.field)
		}
	}
	if err := transport.Validate(&gatehousev1.CreateUserRequest{Username: "ada", DisplayName: "Ada"}); err != nil {
		t.Errorf("a request without NUL: %v", err)
	}
}
