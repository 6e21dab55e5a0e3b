package transport

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// maxEchoRunes is how much of a caller's value an error message quotes.
const maxEchoRunes = 64

// maxMessageBytes bounds a whole error message built from a library's error text, after every
// value in it is bounded (a message listing many short values can still be long).
const maxMessageBytes = 1024

// quote is %q for a value of the caller's that an error message repeats: at most maxEchoRunes
// characters of it, cut on a rune boundary, and when it is longer, how long it was:
// "aaaa..." (10485760 bytes).
func quote(v string) string {
	cut, long := runePrefix(v, maxEchoRunes)
	if !long {
		return strconv.Quote(v)
	}
	q := strconv.Quote(v[:cut])
	return q[:len(q)-1] + `..." (` + strconv.Itoa(len(v)) + " bytes)"
}

// runePrefix returns the length in bytes of the first n runes of s, and whether s is longer.
func runePrefix(s string, n int) (int, bool) {
	i := 0
	for range n {
		if i >= len(s) {
			return i, false
		}
		_, size := utf8.DecodeRuneInString(s[i:])
		i += size
	}
	return i, i < len(s)
}

// boundEchoes bounds the values a library's error text repeats (protojson, the gateway's query
// parser, strconv): every double-quoted string and every other run of non-space characters longer
// than maxEchoRunes characters keeps its first maxEchoRunes characters and says how long it was,
// and the whole text is cut to maxMessageBytes. The result is valid UTF-8.
//
// NOTE: library messages put the offending value anywhere ("invalid value for string field
// username: <value>", `parsing field "page_size": strconv.ParseInt: parsing "<value>": invalid
// syntax`), so rather than parse each format this bounds every token; the short words around the
// value are untouched.
func boundEchoes(msg string) string {
	if len(msg) <= maxEchoRunes {
		return strings.ToValidUTF8(msg, "\uFFFD")
	}
	var b strings.Builder
	for i := 0; i < len(msg); {
		switch c := msg[i]; {
		case c == ' ' || c == '\n' || c == '\t':
			b.WriteByte(c)
			i++
		case c == '"':
			end := closingQuote(msg, i)
			token := msg[i:end]
			inner := strings.TrimSuffix(token[1:], `"`)
			if cut, long := runePrefix(inner, maxEchoRunes); long {
				b.WriteString(`"` + inner[:cut] + `..." (` + strconv.Itoa(len(inner)) + " bytes)")
			} else {
				b.WriteString(token)
			}
			i = end
		default:
			end := i + strings.IndexAny(msg[i:], " \n\t")
			if end < i {
				end = len(msg)
			}
			token := msg[i:end]
			if cut, long := runePrefix(token, maxEchoRunes); long {
				b.WriteString(token[:cut] + "... (" + strconv.Itoa(len(token)) + " bytes)")
			} else {
				b.WriteString(token)
			}
			i = end
		}
	}
	out := strings.ToValidUTF8(b.String(), "\uFFFD")
	if cut, long := bytePrefix(out, maxMessageBytes); long {
		out = out[:cut] + "... (" + strconv.Itoa(len(out)) + " bytes)"
	}
	return out
}

// closingQuote returns the index just past the double quote that closes the one at msg[start],
// skipping backslash escapes, or len(msg) if it is not closed.
func closingQuote(msg string, start int) int {
	for i := start + 1; i < len(msg); i++ {
		switch msg[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return len(msg)
}

// bytePrefix returns the largest rune boundary of s at most n bytes in, and whether s is longer.
func bytePrefix(s string, n int) (int, bool) {
	if len(s) <= n {
		return len(s), false
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return n, true
}
