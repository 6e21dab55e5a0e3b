package server

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/gatehouse/gatehouse/server/events"
	"github.com/gatehouse/gatehouse/server/session"
	"github.com/gatehouse/gatehouse/server/store"
)

// startLive builds the node's live layer over st (commit -> tailer -> hub -> caches and streams),
// takes its first snapshot of the log, and hands it to the session domain. The tailer itself runs
// in the node's errgroup. It returns the layer's metrics too.
func startLive(ctx context.Context, st *store.Store, sessions *session.Service, cfg Config) (*events.Live, []prometheus.Collector, error) {
	lag := prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "gatehouse_event_delivery_seconds",
		Help:    "Delay from an event's commit to its delivery, in log order, to this node's streams.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	})
	live := events.New(st, cfg.Logger, events.Options{
		Tailer: events.TailerOptions{PollInterval: cfg.EventPollInterval, Lag: func(d time.Duration) { lag.Observe(d.Seconds()) }},
	})
	if err := live.Start(ctx); err != nil {
		return nil, nil, fmt.Errorf("reading the event log: %w", err)
	}
	st.SetCommitHook(live.Committed)
	sessions.UseLive(live)
	subscribers := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "gatehouse_stream_subscribers",
		Help: "Open subscriptions to this node's hub (WatchSession and WatchEvents streams).",
	}, func() float64 { return float64(live.Hub().Subscribers()) })
	return live, []prometheus.Collector{lag, subscribers}, nil
}
