package transport

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"connectrpc.com/connect"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultMaxRequestBytes bounds one request message when Options.MaxRequestBytes is zero: 1 MiB.
const DefaultMaxRequestBytes = 1 << 20

// RequestTooLargeReason is the ErrorInfo reason of a request refused for its size, with code
// RESOURCE_EXHAUSTED (HTTP 413 over REST) and the limit in the metadata entry limit_bytes.
const RequestTooLargeReason = "REQUEST_TOO_LARGE"

// maxRequestBytes is o.MaxRequestBytes with its default filled in.
// DefaultRequestBodyTimeout is Options.RequestBodyTimeout when it is zero.
const DefaultRequestBodyTimeout = 30 * time.Second

func (o Options) requestBodyTimeout() time.Duration {
	if o.RequestBodyTimeout > 0 {
		return o.RequestBodyTimeout
	}
	return DefaultRequestBodyTimeout
}

func (o Options) maxRequestBytes() int {
	if o.MaxRequestBytes > 0 {
		return o.MaxRequestBytes
	}
	return DefaultMaxRequestBytes
}

// tooLargeMessage is what a caller learns of a request refused for its size. It never repeats the
// request.
func tooLargeMessage(limit int64) string {
	return fmt.Sprintf("the request is too large: the limit is %d bytes", limit)
}

func tooLargeInfo(limit int64) *errdetails.ErrorInfo {
	return &errdetails.ErrorInfo{
		Reason:   RequestTooLargeReason,
		Domain:   ErrorDomain,
		Metadata: map[string]string{"limit_bytes": strconv.FormatInt(limit, 10)},
	}
}

// tooLargeStatus is the gRPC status of a request refused for its size.
func tooLargeStatus(limit int64) *status.Status {
	st := status.New(codes.ResourceExhausted, tooLargeMessage(limit))
	if withDetails, err := st.WithDetails(tooLargeInfo(limit)); err == nil {
		st = withDetails
	}
	return st
}

// tooLargeConnectError is the connect form of tooLargeStatus.
func tooLargeConnectError(limit int64) *connect.Error {
	ce := connect.NewError(connect.CodeResourceExhausted, errors.New(tooLargeMessage(limit)))
	if d, err := connect.NewErrorDetail(tooLargeInfo(limit)); err == nil {
		ce.AddDetail(d)
	}
	return ce
}

// isTooLarge reports whether st is a refusal for size (RequestTooLargeReason).
func isTooLarge(st *status.Status) bool {
	for _, d := range st.Details() {
		if info, ok := d.(*errdetails.ErrorInfo); ok && info.GetReason() == RequestTooLargeReason && info.GetDomain() == ErrorDomain {
			return true
		}
	}
	return false
}

// LimitRequestBodies bounds the request bodies of the HTTP port before anything reads them, so that
// an oversized request costs the node at most o.MaxRequestBytes of reading and memory whoever
// sends it:
//
//   - A body that is not enveloped (REST JSON, Connect unary) may be at most o.MaxRequestBytes
//     long. One whose Content-Length says more is refused on the first read, without reading any
//     of it; one without a Content-Length is cut off by an http.MaxBytesReader.
//   - An enveloped body (gRPC, gRPC-Web, Connect streaming: application/grpc*, application/connect+*)
//     carries length-prefixed messages; each may be at most o.MaxRequestBytes long, and a prefix
//     announcing more is refused before the message is read.
//
// The refusal is an error from the body's Read: a *connect.Error (RESOURCE_EXHAUSTED with an
// ErrorInfo RequestTooLargeReason), which connect handlers send as it is in the caller's protocol,
// and which the REST gateway's error handler (NewGatewayMux) turns into HTTP 413 with the same
// status. Handlers that do not read their bodies are unaffected.
//
// NOTE: enveloped bodies are bounded per message, not in total, so that a long-lived stream (gRPC
// reflection over the HTTP port is bidirectional) is not cut off after a number of small messages;
// connect's own limit (connect.WithReadMaxBytes, set by ConnectHandlerOptions) bounds each message
// again after decompression.
func LimitRequestBodies(o Options, next http.Handler) http.Handler {
	limit, timeout := int64(o.maxRequestBytes()), o.requestBodyTimeout()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		next.ServeHTTP(w, withLimitedBody(w, withBodyDeadline(w, r, timeout), limit))
	})
}

// withBodyDeadline returns r with its body read under a deadline timeout from now, lifted once the
// body ends: see Options.RequestBodyTimeout.
//
// NOTE: the HTTP server has no ReadTimeout, because on HTTP/1.1 it would also end every stream
// (WatchSession) at that age: after the body, the server reads the connection to notice a client
// going away, under the same deadline. So the deadline is the body's only. Lifted at the body's
// end, it cannot reach that read; a handler that stops reading before the end leaves nothing
// reading the connection for it to fail.
func withBodyDeadline(w http.ResponseWriter, r *http.Request, timeout time.Duration) *http.Request {
	if r.Body == nil || r.Body == http.NoBody {
		return r
	}
	rc := http.NewResponseController(w)
	if rc.SetReadDeadline(time.Now().Add(timeout)) != nil {
		return r
	}
	r = r.WithContext(r.Context())
	r.Body = &deadlineBody{ReadCloser: r.Body, rc: rc}
	return r
}

// deadlineBody is a request body read under a deadline (withBodyDeadline).
type deadlineBody struct {
	io.ReadCloser
	rc     *http.ResponseController
	lifted bool
}

// Read implements io.Reader, lifting the deadline when the body ends.
//
// NOTE: only at its end: after a body that failed (its deadline passed), the server reads what is
// left of it before it reuses the connection, and that read must fail too, closing it.
func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) && !b.lifted {
		b.lifted = true
		_ = b.rc.SetReadDeadline(time.Time{})
	}
	return n, err
}

// withLimitedBody returns r with its body in a limitedBody, unless it is one already or there is
// no body.
//
// NOTE: the body is replaced in a shallow copy of r, not in r: net/http decides whether to reuse
// the connection by looking at the body of the request it made, and one left mostly unread must
// close the connection rather than have its remaining bytes parsed as the next request.
func withLimitedBody(w http.ResponseWriter, r *http.Request, limit int64) *http.Request {
	if r.Body == nil || r.Body == http.NoBody {
		return r
	}
	if _, ok := r.Body.(*limitedBody); ok {
		return r
	}
	b := &limitedBody{limit: limit}
	if enveloped(r.Header.Get("Content-Type")) {
		b.body, b.enveloped = r.Body, true
	} else {
		b.body, b.declared = http.MaxBytesReader(w, r.Body, limit), r.ContentLength
	}
	r = r.WithContext(r.Context())
	r.Body = b
	return r
}

// enveloped reports whether a content type carries length-prefixed messages.
func enveloped(contentType string) bool {
	mt, _, err := mime.ParseMediaType(contentType)
	if err != nil {
		return false
	}
	return mt == "application/grpc" || strings.HasPrefix(mt, "application/grpc+") ||
		strings.HasPrefix(mt, "application/grpc-web") || strings.HasPrefix(mt, "application/connect+")
}

// envelopePrefix is the length of the flags byte and the big-endian uint32 size in front of each
// message of an enveloped body.
const envelopePrefix = 5

// limitedBody is a request body that refuses to yield more than its limit (see
// LimitRequestBodies).
type limitedBody struct {
	body      io.ReadCloser
	limit     int64
	declared  int64 // Content-Length, -1 when unknown; not enveloped only
	enveloped bool

	// The envelope being read: its prefix so far, and the bytes of its message still to come.
	prefix    [envelopePrefix]byte
	prefixLen int
	left      int64

	err     error
	refused atomic.Bool
}

// Read implements io.Reader.
func (b *limitedBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.enveloped {
		return b.readEnveloped(p)
	}
	if b.declared > b.limit {
		return 0, b.refuse()
	}
	n, err := b.body.Read(p)
	if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
		return n, b.refuse()
	}
	return n, err
}

// readEnveloped reads, checking each envelope prefix as it goes by.
func (b *limitedBody) readEnveloped(p []byte) (int, error) {
	n, err := b.body.Read(p)
	for i := 0; i < n; {
		if b.left > 0 {
			step := int(min(int64(n-i), b.left))
			b.left -= int64(step)
			i += step
			continue
		}
		b.prefix[b.prefixLen] = p[i]
		b.prefixLen++
		i++
		if b.prefixLen < envelopePrefix {
			continue
		}
		b.prefixLen = 0
		size := int64(binary.BigEndian.Uint32(b.prefix[1:]))
		if size > b.limit {
			// NOTE: the prefix is withheld, so that the reader fails on reading it rather than
			// after trusting it: connect then reports this error, with its ErrorInfo, instead of
			// its own about the announced size.
			err := b.refuse()
			if start := i - envelopePrefix; start > 0 {
				return start, nil
			}
			return 0, err
		}
		b.left = size
	}
	return n, err
}

// refuse marks the body refused and returns the error every later read returns too.
func (b *limitedBody) refuse() error {
	b.refused.Store(true)
	b.err = tooLargeConnectError(b.limit)
	return b.err
}

// Close implements io.Closer.
func (b *limitedBody) Close() error { return b.body.Close() }

// refusedLimit returns the limit of r's body if a read of it was refused for its size.
func refusedLimit(r *http.Request) (int64, bool) {
	if r == nil {
		return 0, false
	}
	if b, ok := r.Body.(*limitedBody); ok && b.refused.Load() {
		return b.limit, true
	}
	return 0, false
}
