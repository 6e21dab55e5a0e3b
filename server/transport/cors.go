package transport

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"

	connectcors "connectrpc.com/cors"
	"github.com/rs/cors"
)

// corsMaxAge is how long, in seconds, a browser may cache a preflight's answer.
const corsMaxAge = 2 * 60 * 60

// NewCORS returns a middleware that lets pages on the given origins call the HTTP port from a
// browser: Connect and gRPC-Web (connect-web) and REST. It answers preflight requests from those
// origins itself and adds the CORS headers to their calls; requests from other origins get no CORS
// headers, so the browser keeps the answers from those pages. With no origins it returns the
// handler unchanged: no CORS headers at all, the default.
//
// An origin is scheme://host[:port] (https://app.example.com, http://127.0.0.1:5173) with no path,
// or "*" for every origin; one "*" may stand for part of the host (https://*.example.com).
//
// NOTE: credentials (cookies) are not allowed: callers authenticate with the Authorization header,
// which the allowed headers include, and a page can only send it by holding the token.
func NewCORS(origins []string) (func(http.Handler) http.Handler, error) {
	if len(origins) == 0 {
		return func(h http.Handler) http.Handler { return h }, nil
	}
	for _, o := range origins {
		if err := checkOrigin(o); err != nil {
			return nil, err
		}
	}
	c := cors.New(cors.Options{
		AllowedOrigins: origins,
		// GET and POST for Connect and gRPC-Web, the rest for REST.
		AllowedMethods: append(connectcors.AllowedMethods(), http.MethodPut, http.MethodPatch, http.MethodDelete),
		AllowedHeaders: append(connectcors.AllowedHeaders(), "Authorization"),
		// grpc-status, grpc-message and grpc-status-details-bin: gRPC-Web's status and error
		// details (ErrorInfo) when they come in the headers of a response without a body.
		ExposedHeaders: connectcors.ExposedHeaders(),
		MaxAge:         corsMaxAge,
	})
	return c.Handler, nil
}

// checkOrigin reports whether o is an origin NewCORS accepts. A path (even "/") or a missing
// scheme would never match a browser's Origin header, so they are refused rather than ignored.
func checkOrigin(o string) error {
	if o == "*" {
		return nil
	}
	if strings.Count(o, "*") > 1 {
		return fmt.Errorf("CORS origin %q: at most one * is allowed", o)
	}
	u, err := url.Parse(strings.Replace(o, "*", "wildcard", 1))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		u.Path != "" || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(o, "?") || strings.HasSuffix(o, "#") {
		return fmt.Errorf("CORS origin %q: want scheme://host[:port] with no path, like https://app.example.com", o)
	}
	return nil
}
