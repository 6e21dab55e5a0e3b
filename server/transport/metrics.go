package transport

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
)

// Metrics are the per-call metrics both interceptor twins record, registered on a Prometheus
// registry. Their labels are bounded: protocol (grpc, rest, connect, grpcweb), the full method
// name of a registered RPC, and the status code.
type Metrics struct {
	calls    *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

// NewMetrics creates the call metrics and registers them on reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		calls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gatehouse_rpc_calls_total",
			Help: "RPCs handled, by protocol, method and status code.",
		}, []string{"protocol", "method", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "gatehouse_rpc_duration_seconds",
			Help: "Time from the arrival of an RPC to its answer (for streams: to the end of the stream), by protocol and method.",
			// NOTE: from 100 µs (a validation from memory) to 10 s (a grant to a large group).
			Buckets: prometheus.ExponentialBuckets(0.0001, 4, 9),
		}, []string{"protocol", "method"}),
	}
	reg.MustRegister(m.calls, m.duration)
	return m
}

// observe records one finished call. A nil m records nothing.
func (m *Metrics) observe(c *call, code codes.Code, took time.Duration) {
	if m == nil {
		return
	}
	m.calls.WithLabelValues(c.protocol, c.method, code.String()).Inc()
	m.duration.WithLabelValues(c.protocol, c.method).Observe(took.Seconds())
}
