package transport

import (
	"errors"
	"fmt"
	"strings"
	"sync"

	"buf.build/go/protovalidate"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

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
		if field, ok := nulString(msg.ProtoReflect(), ""); ok {
			return errs.InvalidArgument("INVALID_ARGUMENT", "invalid request: "+field+": must not contain NUL characters",
				errs.FieldViolation{Field: field, Description: "must not contain NUL characters"})
		}
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

// nulString returns the path of the first string field (in a message, list or map, at any depth)
// that contains a NUL character.
//
// NOTE: protobuf strings may hold U+0000, PostgreSQL text may not (SQLSTATE 22021): without this a
// NUL in a note, a reason or a name would be a 500 on one backend and stored on the other.
func nulString(m protoreflect.Message, prefix string) (string, bool) {
	var path string
	found := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		name := prefix + string(fd.Name())
		switch {
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				if p, ok := nulValue(fd, l.Get(i), fmt.Sprintf("%s[%d]", name, i)); ok {
					path, found = p, true
					return false
				}
			}
		case fd.IsMap():
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				key := k.String()
				if strings.ContainsRune(key, 0) {
					path, found = name, true
					return false
				}
				path, found = nulValue(fd.MapValue(), mv, fmt.Sprintf("%s[%q]", name, key))
				return !found
			})
			return !found
		default:
			path, found = nulValue(fd, v, name)
		}
		return !found
	})
	return path, found
}

// nulValue is nulString for one value of field fd at path.
func nulValue(fd protoreflect.FieldDescriptor, v protoreflect.Value, path string) (string, bool) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		if strings.ContainsRune(v.String(), 0) {
			return path, true
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return nulString(v.Message(), path+".")
	}
	return "", false
}
