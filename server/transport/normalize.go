package transport

import (
	"strings"
	"sync"

	"buf.build/gen/go/bufbuild/protovalidate/protocolbuffers/go/buf/validate"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// NOTE: ids are UUIDs, which RFC 9562 compares case-insensitively, and protovalidate's uuid rule
// accepts either case; Gatehouse issues and stores them in lower case. So that an id copied in
// upper case finds its resource (rather than passing validation and then not being found), every
// string field with the uuid rule is lower-cased before validation, authorisation and the handler
// see the request. Other strings are left alone.

// idFields says where a message type has uuid fields: its own, and the message fields that lead
// to more.
type idFields struct {
	ids      []protoreflect.FieldDescriptor
	children []protoreflect.FieldDescriptor
}

// idFieldsCache holds an *idFields per message full name.
var idFieldsCache sync.Map

// normalizeIDs lower-cases, in place, every uuid-validated string field of msg and of the messages
// in it.
func normalizeIDs(msg any) {
	if m, ok := msg.(proto.Message); ok {
		normalizeMessage(m.ProtoReflect())
	}
}

func normalizeMessage(m protoreflect.Message) {
	f := idFieldsOf(m.Descriptor())
	for _, fd := range f.ids {
		if !m.Has(fd) {
			continue
		}
		if fd.IsList() {
			l := m.Mutable(fd).List()
			for i := range l.Len() {
				if v := l.Get(i).String(); hasUpper(v) {
					l.Set(i, protoreflect.ValueOfString(strings.ToLower(v)))
				}
			}
			continue
		}
		if v := m.Get(fd).String(); hasUpper(v) {
			m.Set(fd, protoreflect.ValueOfString(strings.ToLower(v)))
		}
	}
	for _, fd := range f.children {
		if !m.Has(fd) {
			continue
		}
		switch v := m.Mutable(fd); {
		case fd.IsList():
			for i := range v.List().Len() {
				normalizeMessage(v.List().Get(i).Message())
			}
		case fd.IsMap():
			v.Map().Range(func(_ protoreflect.MapKey, e protoreflect.Value) bool {
				normalizeMessage(e.Message())
				return true
			})
		default:
			normalizeMessage(v.Message())
		}
	}
}

func hasUpper(s string) bool {
	return strings.IndexFunc(s, func(r rune) bool { return 'A' <= r && r <= 'Z' }) >= 0
}

// idFieldsOf returns, computing it once per type, where md has uuid fields.
func idFieldsOf(md protoreflect.MessageDescriptor) *idFields {
	if f, ok := idFieldsCache.Load(md.FullName()); ok {
		return f.(*idFields)
	}
	f := computeIDFields(md, map[protoreflect.FullName]bool{})
	idFieldsCache.Store(md.FullName(), f)
	return f
}

// computeIDFields builds the idFields of md; visiting holds the types being computed, so that a
// recursive type ends the recursion.
func computeIDFields(md protoreflect.MessageDescriptor, visiting map[protoreflect.FullName]bool) *idFields {
	f := &idFields{}
	visiting[md.FullName()] = true
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if isUUIDField(fd) {
			f.ids = append(f.ids, fd)
			continue
		}
		sub := fd.Message()
		if fd.IsMap() {
			sub = fd.MapValue().Message()
		}
		if sub == nil || strings.HasPrefix(string(sub.FullName()), "google.protobuf.") {
			continue
		}
		if visiting[sub.FullName()] {
			f.children = append(f.children, fd) // recursive: may hold ids; walked at run time
			continue
		}
		if s := computeIDFields(sub, visiting); len(s.ids) > 0 || len(s.children) > 0 {
			f.children = append(f.children, fd)
		}
	}
	delete(visiting, md.FullName())
	return f
}

// isUUIDField reports whether fd is a string field (or list of strings) with protovalidate's
// uuid rule.
func isUUIDField(fd protoreflect.FieldDescriptor) bool {
	if fd.Kind() != protoreflect.StringKind || fd.IsMap() {
		return false
	}
	rules, _ := proto.GetExtension(fd.Options(), validate.E_Field).(*validate.FieldRules)
	if fd.IsList() {
		rules = rules.GetRepeated().GetItems()
	}
	return rules.GetString().GetUuid()
}
