package transport_test

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"google.golang.org/genproto/googleapis/api/annotations"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	gatehousev1 "github.com/gatehouse/gatehouse/gen/go/gatehouse/v1"
	"github.com/gatehouse/gatehouse/gen/openapi"
)

// TestOpenAPIPathParameters: every path parameter of the OpenAPI document says what the node
// accepts for it, as the field's protovalidate rule does: format uuid for a string.uuid rule, the
// same pattern for a string.pattern rule (the openapiv2_field annotations in proto/ repeat the
// rules, and this keeps them in step). Its name has no dot (schemathesis and client generators
// take {user.id} for a nested object), so the document renames the {user.id} and {policy.id} of
// the HTTP rules.
func TestOpenAPIPathParameters(t *testing.T) {
	var doc struct {
		Paths map[string]map[string]struct {
			OperationID string `json:"operationId"`
			Parameters  []struct {
				Name, In, Format, Pattern string
			}
		}
	}
	if err := json.Unmarshal(openapi.JSON, &doc); err != nil {
		t.Fatal(err)
	}
	variable := regexp.MustCompile(`\{([^}=]+)`)
	checked := 0
	for _, file := range []protoreflect.FileDescriptor{
		gatehousev1.File_gatehouse_v1_identity_proto, gatehousev1.File_gatehouse_v1_session_proto, gatehousev1.File_gatehouse_v1_policy_proto,
	} {
		for i := 0; i < file.Services().Len(); i++ {
			svc := file.Services().Get(i)
			for j := 0; j < svc.Methods().Len(); j++ {
				m := svc.Methods().Get(j)
				rule, _ := proto.GetExtension(m.Options(), annotations.E_Http).(*annotations.HttpRule)
				if rule == nil {
					continue
				}
				template := rule.GetGet() + rule.GetPost() + rule.GetPut() + rule.GetPatch() + rule.GetDelete()
				opID := string(svc.Name()) + "_" + string(m.Name())
				var params map[string]struct{ format, pattern string }
				for path, ops := range doc.Paths {
					for _, op := range ops {
						if op.OperationID != opID {
							continue
						}
						if strings.Contains(path, ".") {
							t.Errorf("%s: path %s has a dotted parameter", opID, path)
						}
						params = map[string]struct{ format, pattern string }{}
						for _, p := range op.Parameters {
							if p.In == "path" {
								params[p.Name] = struct{ format, pattern string }{p.Format, p.Pattern}
							}
						}
					}
				}
				if params == nil {
					t.Errorf("%s: no operation in the document", opID)
					continue
				}
				for _, v := range variable.FindAllStringSubmatch(template, -1) {
					fd := fieldByPath(m.Input(), v[1])
					if fd == nil {
						t.Errorf("%s: no field %s", opID, v[1])
						continue
					}
					p, ok := params[paramName(v[1])]
					if !ok {
						t.Errorf("%s: the document has no path parameter for {%s} (has %v)", opID, v[1], params)
						continue
					}
					rules, _ := proto.GetExtension(fd.Options(), validate.E_Field).(*validate.FieldRules)
					want := struct{ format, pattern string }{}
					switch {
					case rules.GetString().GetUuid():
						want.format = "uuid"
					case rules.GetString().GetPattern() != "":
						want.pattern = rules.GetString().GetPattern()
					default:
						t.Errorf("%s: {%s} has no uuid or pattern rule", opID, v[1])
					}
					if p != want {
						t.Errorf("%s: {%s} is %+v in the document, want %+v (its protovalidate rule)", opID, v[1], p, want)
					}
					checked++
				}
			}
		}
	}
	if checked < 25 {
		t.Errorf("checked %d path parameters, want every one (at least 25)", checked)
	}
}

// fieldByPath returns the field a dotted path names in md.
func fieldByPath(md protoreflect.MessageDescriptor, path string) protoreflect.FieldDescriptor {
	var fd protoreflect.FieldDescriptor
	for _, name := range strings.Split(path, ".") {
		if md == nil {
			return nil
		}
		if fd = md.Fields().ByName(protoreflect.Name(name)); fd == nil {
			return nil
		}
		md = fd.Message()
	}
	return fd
}

// paramName is the document's name of the path variable path: its lowerCamelCase JSON name, with
// a dotted path joined the same way ({user_id} is userId, {user.id} too).
func paramName(path string) string {
	var b strings.Builder
	for i, part := range strings.Split(path, ".") {
		for j, word := range strings.Split(part, "_") {
			if (i > 0 || j > 0) && word != "" {
				word = strings.ToUpper(word[:1]) + word[1:]
			}
			b.WriteString(word)
		}
	}
	return b.String()
}
