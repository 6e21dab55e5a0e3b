package transport

import (
	"errors"
	"fmt"
	"sync"

	"buf.build/go/protovalidate"
	"google.golang.org/protobuf/proto"

	"github.com/gatehouse/gatehouse/server/errs"
)

// validator is built once, on first use, and shared: protovalidate validators are safe for
// concurrent use and cache the compiled rules of every message type they have seen.
var validator = sync.OnceValues(func() (protovalidate.Validator, error) {
	return protovalidate.New()
})

// Validate checks msg against the protovalidate rules declared in its proto. A message that
// breaks them gives an errs.InvalidArgument with reason INVALID_ARGUMENT, a message naming the
// first violation, and one errs.FieldViolation per violation (Field is the dotted field path,
// empty for message-level rules). A failure of the validator itself (a rule that does not
// compile, a CEL runtime error) is an errs.Internal. A nil msg is valid.
func Validate(msg proto.Message) error {
	if msg == nil {
		return nil
	}
	v, err := validator()
	if err != nil {
		return errs.Internal(fmt.Errorf("build protovalidate validator: %w", err))
	}
	err = v.Validate(msg)
	if err == nil {
		return nil
	}
	var verr *protovalidate.ValidationError
	if !errors.As(err, &verr) || len(verr.Violations) == 0 {
		return errs.Internal(fmt.Errorf("validate %s: %w", msg.ProtoReflect().Descriptor().FullName(), err))
	}
	violations := make([]errs.FieldViolation, 0, len(verr.Violations))
	for _, violation := range verr.Violations {
		violations = append(violations, errs.FieldViolation{
			Field:       protovalidate.FieldPathString(violation.Proto.GetField()),
			Description: description(violation),
		})
	}
	return errs.InvalidArgument("INVALID_ARGUMENT", "invalid request: "+verr.Violations[0].String(), violations...)
}

// description is what a violation says is wrong, falling back to its rule id for rules without a
// message.
func description(v *protovalidate.Violation) string {
	if msg := v.Proto.GetMessage(); msg != "" {
		return msg
	}
	if id := v.Proto.GetRuleId(); id != "" {
		return "[" + id + "]"
	}
	return "invalid value"
}
