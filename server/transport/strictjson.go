package transport

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"strconv"
	"strings"

	"connectrpc.com/connect"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/gatehouse/gatehouse/server/errs"
)

// UnknownFieldReason is the ErrorInfo reason of a JSON request naming a field its message does not
// have (a body key or a REST query parameter), with a BadRequest violation naming it.
const UnknownFieldReason = "UNKNOWN_FIELD"

// NOTE: proto3 JSON parsers may ignore unknown fields, and grpc-gateway and connect-go do by
// default, so that clients and servers need not share one schema version. For a policy service
// that is the wrong trade: a misspelled "maxSesions": 1 would create a policy that limits
// nothing. Gatehouse's JSON fronts therefore reject unknown fields and unknown enum value names;
// the binary protobuf codecs keep protobuf's forward compatibility.

// jsonProblem is the first thing in a JSON document that makes it unfit for its message although
// protojson's syntax and type checks would pass it when discarding unknown names: a key naming
// no field, or an unknown enum value name.
type jsonProblem struct {
	// path is where it is, as proto field names from the message the document encodes
	// ("scope.user_id", "contains[1]"), ending with the unknown key as sent.
	path string
	// unknownField is true for an unknown key, false for an unknown enum value name.
	unknownField bool
	// value is the unknown enum value name; empty for an unknown key.
	value string
	// malformed is any other parse error (bad JSON, a value of the wrong type), whose bounded
	// message is value and whose field, when the parser named one, is path.
	malformed bool
}

// err is the domain error of the problem, as the JSON fronts return it. prefix is where the
// document sits in the request ("policy." when a REST body maps to the request's policy field).
func (p jsonProblem) err(prefix string) *errs.Error {
	field := prefix + p.path
	if p.malformed {
		var violations []errs.FieldViolation
		if p.path != "" {
			violations = append(violations, errs.FieldViolation{Field: boundedKey(field), Description: "malformed value"})
		}
		return errs.InvalidArgument(MalformedReason, "malformed request: "+p.value, violations...)
	}
	if p.unknownField {
		return errs.InvalidArgument(UnknownFieldReason, "unknown field "+quote(field),
			errs.FieldViolation{Field: boundedKey(field), Description: "unknown field"})
	}
	return errs.InvalidArgument(MalformedReason, "malformed request: invalid value "+quote(p.value)+" for enum field "+quote(field),
		errs.FieldViolation{Field: boundedKey(field), Description: "unknown enum value"})
}

// text is the problem as a decoding error's text, which the REST gateway passes on as the message
// of a bare INVALID_ARGUMENT; parseJSONProblem reads it back.
func (p jsonProblem) text() string {
	if p.unknownField {
		return "unknown field " + strconv.Quote(p.path)
	}
	return "invalid value for enum field " + strconv.Quote(p.path) + ": " + strconv.Quote(p.value)
}

var (
	unknownFieldText = regexp.MustCompile(`^unknown field ("(?:[^"\\]|\\.)*")$`)
	unknownEnumText  = regexp.MustCompile(`^invalid value for enum field ("(?:[^"\\]|\\.)*"): ("(?:[^"\\]|\\.)*")$`)
)

// parseJSONProblem reads back the text of a jsonProblem.
func parseJSONProblem(msg string) (jsonProblem, bool) {
	if m := unknownFieldText.FindStringSubmatch(msg); m != nil {
		if path, err := strconv.Unquote(m[1]); err == nil {
			return jsonProblem{path: path, unknownField: true}, true
		}
	}
	if m := unknownEnumText.FindStringSubmatch(msg); m != nil {
		path, perr := strconv.Unquote(m[1])
		value, verr := strconv.Unquote(m[2])
		if perr == nil && verr == nil {
			return jsonProblem{path: path, value: value}, true
		}
	}
	return jsonProblem{}, false
}

// findJSONProblem returns the jsonProblem behind protojson's strict error err for data, a JSON
// document of message md: the first unknown key or enum value name, when err is about one. For
// any other error (a syntax error, a value of the wrong type) it returns false, and err stands.
func findJSONProblem(md protoreflect.MessageDescriptor, data []byte, err error) (jsonProblem, bool) {
	if msg := err.Error(); !strings.Contains(msg, "unknown field") && !strings.Contains(msg, "invalid value for enum field") {
		return jsonProblem{}, false
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	p, found, _ := walkMessage(dec, md, "")
	return p, found
}

// boundedKey is a field path as a BadRequest violation names it: at most maxEchoRunes characters
// of it.
func boundedKey(key string) string {
	if cut, long := runePrefix(key, maxEchoRunes); long {
		return key[:cut] + "..."
	}
	return key
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// walkMessage reads one JSON value that encodes a message of type md.
func walkMessage(dec *json.Decoder, md protoreflect.MessageDescriptor, path string) (jsonProblem, bool, error) {
	if strings.HasPrefix(string(md.FullName()), "google.protobuf.") && md.FullName() != "google.protobuf.Empty" {
		// Well-known types have JSON forms of their own, which protojson checks.
		return jsonProblem{}, false, skipValue(dec)
	}
	tok, err := dec.Token()
	if err != nil {
		return jsonProblem{}, false, err
	}
	if tok != json.Delim('{') {
		return jsonProblem{}, false, skipRest(dec, tok)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return jsonProblem{}, false, err
		}
		key, _ := tok.(string)
		// protojson takes a field by its JSON name or its proto name.
		fd := md.Fields().ByJSONName(key)
		if fd == nil {
			fd = md.Fields().ByTextName(key)
		}
		if fd == nil {
			return jsonProblem{path: joinPath(path, key), unknownField: true}, true, nil
		}
		if p, found, err := walkField(dec, fd, joinPath(path, string(fd.Name()))); found || err != nil {
			return p, found, err
		}
	}
	_, err = dec.Token() // '}'
	return jsonProblem{}, false, err
}

// walkField reads the JSON value of field fd.
func walkField(dec *json.Decoder, fd protoreflect.FieldDescriptor, path string) (jsonProblem, bool, error) {
	switch {
	case fd.IsMap():
		return walkContainer(dec, '{', func(i int, key string) (jsonProblem, bool, error) {
			return walkSingular(dec, fd.MapValue(), fmt.Sprintf("%s[%s]", path, quote(key)))
		})
	case fd.IsList():
		return walkContainer(dec, '[', func(i int, _ string) (jsonProblem, bool, error) {
			return walkSingular(dec, fd, fmt.Sprintf("%s[%d]", path, i))
		})
	default:
		return walkSingular(dec, fd, path)
	}
}

// walkSingular reads one value of fd's type (an element, for lists and maps).
func walkSingular(dec *json.Decoder, fd protoreflect.FieldDescriptor, path string) (jsonProblem, bool, error) {
	switch {
	case fd.Message() != nil:
		return walkMessage(dec, fd.Message(), path)
	case fd.Enum() != nil:
		tok, err := dec.Token()
		if err != nil {
			return jsonProblem{}, false, err
		}
		name, ok := tok.(string)
		if ok && fd.Enum().Values().ByName(protoreflect.Name(name)) == nil && fd.Enum().FullName() != "google.protobuf.NullValue" {
			return jsonProblem{path: path, value: name}, true, nil
		}
		return jsonProblem{}, false, skipRest(dec, tok)
	default:
		return jsonProblem{}, false, skipValue(dec)
	}
}

// walkContainer reads a JSON object or array (open is '{' or '['), calling each for every element
// with its index and, for objects, its key; anything else (null) is skipped.
func walkContainer(dec *json.Decoder, open json.Delim, each func(i int, key string) (jsonProblem, bool, error)) (jsonProblem, bool, error) {
	tok, err := dec.Token()
	if err != nil {
		return jsonProblem{}, false, err
	}
	if tok != open {
		return jsonProblem{}, false, skipRest(dec, tok)
	}
	for i := 0; dec.More(); i++ {
		var key string
		if open == '{' {
			tok, err := dec.Token()
			if err != nil {
				return jsonProblem{}, false, err
			}
			key, _ = tok.(string)
		}
		if p, found, err := each(i, key); found || err != nil {
			return p, found, err
		}
	}
	_, err = dec.Token()
	return jsonProblem{}, false, err
}

// skipValue reads and discards one JSON value.
func skipValue(dec *json.Decoder) error {
	tok, err := dec.Token()
	if err != nil {
		return err
	}
	return skipRest(dec, tok)
}

// skipRest discards the rest of the JSON value that began with tok.
func skipRest(dec *json.Decoder, tok json.Token) error {
	if tok != json.Delim('{') && tok != json.Delim('[') {
		return nil
	}
	for depth := 1; depth > 0; {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
	}
	return nil
}

// messageDescriptorOf returns the descriptor of the message v is or points to (v may be a pointer
// to a message pointer, as grpc-gateway decodes bodies mapped to a field), or nil.
func messageDescriptorOf(v any) protoreflect.MessageDescriptor {
	if m, ok := v.(proto.Message); ok {
		return m.ProtoReflect().Descriptor()
	}
	messageType := reflect.TypeFor[proto.Message]()
	for t := reflect.TypeOf(v); t != nil && t.Kind() == reflect.Pointer; t = t.Elem() {
		if t.Implements(messageType) {
			return reflect.Zero(t).Interface().(proto.Message).ProtoReflect().Descriptor()
		}
	}
	return nil
}

// --- Connect ---

// jsonProblemField is the unknown field under which the Connect JSON codec leaves a jsonProblem
// on the message it decoded, for the interceptors to report (checkJSONProblem). It is the largest
// field number protobuf allows, which no Gatehouse message uses.
//
// NOTE: connect reports a codec's error as a bare INVALID_ARGUMENT without details, before any
// interceptor runs. To give an unknown field the same BadRequest violation and ErrorInfo over
// Connect as over REST, the codec decodes the message leniently, records the problem on the
// message itself, and the interceptor, which sees the message before validation and the handler,
// refuses it. The record lives and dies with the message; a binary client sending that field
// number gets the same refusal.
const jsonProblemField protowire.Number = protowire.MaxValidNumber

// jsonProblem kinds as recorded.
const (
	problemUnknownField byte = 'f'
	problemUnknownEnum  byte = 'e'
	problemMalformed    byte = 'm'
)

// recordJSONProblem appends p to m's unknown fields.
func recordJSONProblem(m proto.Message, p jsonProblem) {
	kind := problemUnknownEnum
	switch {
	case p.malformed:
		kind = problemMalformed
	case p.unknownField:
		kind = problemUnknownField
	}
	rec := append([]byte{kind}, p.path...)
	rec = append(append(rec, 0), p.value...)
	r := m.ProtoReflect()
	raw := protowire.AppendTag(r.GetUnknown(), jsonProblemField, protowire.BytesType)
	r.SetUnknown(protowire.AppendBytes(raw, rec))
}

// recordedJSONProblem returns the jsonProblem recorded on m, if any.
func recordedJSONProblem(m proto.Message) (jsonProblem, bool) {
	raw := m.ProtoReflect().GetUnknown()
	for len(raw) > 0 {
		num, typ, n := protowire.ConsumeTag(raw)
		if n < 0 {
			return jsonProblem{}, false
		}
		raw = raw[n:]
		if num == jsonProblemField && typ == protowire.BytesType {
			rec, n := protowire.ConsumeBytes(raw)
			if n < 0 || len(rec) == 0 {
				return jsonProblem{}, false
			}
			path, value, _ := strings.Cut(string(rec[1:]), "\x00")
			return jsonProblem{path: path, unknownField: rec[0] == problemUnknownField, malformed: rec[0] == problemMalformed, value: value}, true
		}
		n = protowire.ConsumeFieldValue(num, typ, raw)
		if n < 0 {
			return jsonProblem{}, false
		}
		raw = raw[n:]
	}
	return jsonProblem{}, false
}

// checkJSONProblem returns the error of a jsonProblem recorded on req by the Connect JSON codec.
func checkJSONProblem(req any) error {
	m, ok := req.(proto.Message)
	if !ok || len(m.ProtoReflect().GetUnknown()) == 0 {
		return nil
	}
	if p, ok := recordedJSONProblem(m); ok {
		return p.err("")
	}
	return nil
}

// connectJSON is connect's JSON codec with protojson's default, strict, unmarshalling: unknown
// fields and unknown enum value names are refused (see jsonProblemField), and other parse errors
// repeat at most a bounded part of the value (boundEchoes). Marshalling is connect's.
type connectJSON struct{ name string }

var _ connect.Codec = connectJSON{}

// Name implements connect.Codec.
func (c connectJSON) Name() string { return c.name }

// Marshal implements connect.Codec.
func (connectJSON) Marshal(message any) ([]byte, error) {
	m, ok := message.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a proto message", message)
	}
	return protojson.Marshal(m)
}

// MarshalAppend implements connect's optional appending codec.
func (connectJSON) MarshalAppend(dst []byte, message any) ([]byte, error) {
	m, ok := message.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("%T is not a proto message", message)
	}
	return protojson.MarshalOptions{}.MarshalAppend(dst, m)
}

// Unmarshal implements connect.Codec.
func (connectJSON) Unmarshal(data []byte, message any) error {
	m, ok := message.(proto.Message)
	if !ok {
		return fmt.Errorf("%T is not a proto message", message)
	}
	if len(data) == 0 {
		return errors.New("zero-length payload is not a valid JSON object")
	}
	err := protojson.Unmarshal(data, m)
	if err == nil {
		return nil
	}
	p, found := findJSONProblem(m.ProtoReflect().Descriptor(), data, err)
	if !found {
		// NOTE: recorded like an unknown field, not returned: connect would answer a decoding
		// error before the interceptor runs, so an anonymous caller of a method it may not call
		// would learn what its request got wrong, and the answer would carry no ErrorInfo.
		proto.Reset(m)
		p = jsonProblem{malformed: true, value: boundEchoes(err.Error())}
		if f := fieldInParseError.FindStringSubmatch(err.Error()); f != nil {
			p.path = f[1]
		}
		recordJSONProblem(m, p)
		return nil
	}
	proto.Reset(m)
	if err := (protojson.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, m); err != nil {
		return errors.New(boundEchoes(err.Error()))
	}
	recordJSONProblem(m, p)
	return nil
}

// connectCodecs are the codecs of the connect handlers: the strict JSON codec under both names
// connect registers JSON under. The binary protobuf codec stays connect's.
func connectCodecs() []connect.HandlerOption {
	return []connect.HandlerOption{
		connect.WithCodec(connectJSON{name: "json"}),
		connect.WithCodec(connectJSON{name: "json; charset=utf-8"}),
	}
}
