package main

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"time"
)

// maxFailedFraction is the share of failed calls past which a measured run makes the bench fail.
const maxFailedFraction = 0.01

// callGrace is how long a call still in flight when its run's window closes may take to finish.
const callGrace = 30 * time.Second

// work is one call of a load. worker numbers the goroutine making it, from 0.
type work func(ctx context.Context, worker int) error

// load is a closed-loop load: workers goroutines, each making its next call as soon as the last
// one returned.
type load struct {
	workers int
	work    work
}

// sample is what one measured run completed within its window.
type sample struct {
	ok, failed int
	window     time.Duration
	// latency are the durations of the successful calls, sorted.
	latency []time.Duration
	// firstErr is the first failure, for the log.
	firstErr error
}

// measure runs l for d and returns the calls that completed within the run's window: d, or longer
// when no call completed within d, up to the first call that did.
//
// NOTE: a call still in flight when the window closes is neither counted nor cancelled: it runs to
// its end on a context that outlives the window by callGrace, so that closing the window causes no
// failures, and it is left out because its work was not all done within the window. The rate is
// then the completions within the window over the window. When a single call takes longer than d
// (a password login on a slow machine, or under the race detector), the window stretches to the
// first completion, so that a short run measures one slow call instead of nothing.
func measure(ctx context.Context, l load, d time.Duration) (sample, error) {
	// NOTE: a collection first, so that one run does not pay for the garbage of the one before.
	runtime.GC()
	start := time.Now()
	end := start.Add(d)
	callCtx, cancel := context.WithDeadline(ctx, end.Add(callGrace))
	defer cancel()
	var (
		mu        sync.Mutex
		completed bool          // some call has completed within the window
		late      time.Duration // the window, when the first completion came after d
	)
	// count reports whether a call that completed at t is within the window.
	count := func(t time.Time) bool {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case !t.After(end):
			completed = true
			return true
		case !completed:
			completed, late = true, t.Sub(start)
			return true
		}
		return false
	}
	parts := make([]sample, l.workers)
	var wg sync.WaitGroup
	for i := range l.workers {
		wg.Go(func() {
			p := &parts[i]
			for callCtx.Err() == nil {
				t0 := time.Now()
				if !t0.Before(end) {
					return
				}
				err := l.work(callCtx, i)
				t1 := time.Now()
				if !count(t1) {
					return
				}
				if err != nil {
					p.failed++
					if p.firstErr == nil {
						p.firstErr = err
					}
					continue
				}
				p.ok++
				p.latency = append(p.latency, t1.Sub(t0))
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return sample{}, err
	}
	s := sample{window: max(d, late)}
	for _, p := range parts {
		s.ok += p.ok
		s.failed += p.failed
		s.latency = append(s.latency, p.latency...)
		if s.firstErr == nil {
			s.firstErr = p.firstErr
		}
	}
	slices.Sort(s.latency)
	return s, nil
}

// rate is the successful calls per second.
func (s sample) rate() float64 { return float64(s.ok) / s.window.Seconds() }

// percentile returns the q-quantile (0 < q <= 1) of the successful calls' latency, by nearest
// rank, or zero when there were none.
func (s sample) percentile(q float64) time.Duration {
	if len(s.latency) == 0 {
		return 0
	}
	i := int(math.Ceil(q*float64(len(s.latency)))) - 1
	return s.latency[min(max(i, 0), len(s.latency)-1)]
}

// failedTooOften reports whether more than maxFailedFraction of the run's calls failed, or no call
// completed at all.
func (s sample) failedTooOften() bool {
	n := s.ok + s.failed
	return n == 0 || float64(s.failed) > maxFailedFraction*float64(n)
}

// series are the alternated measured runs of a figure and of its baseline.
type series struct {
	figure, baseline []sample
}

// alternate warms the baseline and the figure up, then measures each o.runs times, alternating
// (baseline first), and logs every run as name.
//
// NOTE: the warm-up (a fifth of a run, at most a second, not measured) opens the connections and
// fills the pools and caches that a first measured run would otherwise pay for.
func alternate(ctx context.Context, e *env, o options, name string, baseline, figure load) (series, error) {
	warm := min(o.duration/5, time.Second)
	for _, l := range []load{baseline, figure} {
		if _, err := measure(ctx, l, warm); err != nil {
			return series{}, err
		}
	}
	var s series
	for i := range o.runs {
		b, err := measure(ctx, baseline, o.duration)
		if err != nil {
			return series{}, err
		}
		f, err := measure(ctx, figure, o.duration)
		if err != nil {
			return series{}, err
		}
		s.baseline, s.figure = append(s.baseline, b), append(s.figure, f)
		e.progress("%s run %d/%d: baseline %.0f/s, figure %.0f/s (p50 %.2f ms, p99 %.2f ms)%s",
			name, i+1, o.runs, b.rate(), f.rate(), ms(f.percentile(0.5)), ms(f.percentile(0.99)), failures(b, f))
	}
	return s, nil
}

// failures describes the failed calls of a run of a baseline and a figure for the log, or says
// nothing when there were none.
func failures(b, f sample) string {
	var out string
	for _, x := range []struct {
		what string
		s    sample
	}{{"baseline", b}, {"figure", f}} {
		if x.s.failed > 0 {
			out += fmt.Sprintf("; %s: %d failed calls, the first: %v", x.what, x.s.failed, x.s.firstErr)
		}
	}
	return out
}

// versus are the fields of a result measured against a baseline (validate, login), from the
// medians of its runs. It is embedded in the results, whose JSON holds its fields flat.
type versus struct {
	// Rate is the figure's successful calls per second, and BaselineRate the baseline's, medians
	// over the runs; Ratio is Rate over BaselineRate.
	Rate float64 `json:"rate"`
	// P50 and P99 are the medians over the runs of each run's latency percentiles.
	P50          float64 `json:"p50_ms"`
	P99          float64 `json:"p99_ms"`
	BaselineRate float64 `json:"baseline_rate"`
	Ratio        float64 `json:"ratio"`
	// RunRatios are each run's rate over the baseline measured just before it, in run order.
	RunRatios []float64 `json:"run_ratios"`
	// Errors and BaselineErrors are the failed calls of all measured runs.
	Errors         int     `json:"errors"`
	BaselineErrors int     `json:"baseline_errors"`
	Runs           int     `json:"runs"`
	Duration       float64 `json:"duration_s"`
}

// versus returns the result fields of s, measured with o.
func (s summary) versus(o options) versus {
	return versus{
		Rate: round(s.rate, 1), P50: round(s.p50, 3), P99: round(s.p99, 3),
		BaselineRate: round(s.baselineRate, 1), Ratio: round(s.ratio, 3), RunRatios: s.runRatios,
		Errors: s.errors, BaselineErrors: s.baselineErrors, Runs: o.runs, Duration: o.duration.Seconds(),
	}
}

// summary are the medians of a series.
type summary struct {
	rate, baselineRate, ratio float64
	// runRatios are each run's figure over the baseline measured just before it, in run order:
	// their spread is the machine's noise, which the medians hide.
	runRatios              []float64
	p50, p99               float64 // milliseconds
	errors, baselineErrors int
	// badRuns counts the runs, of the figure or the baseline, that failed too often.
	badRuns int
}

// summarize returns the medians of s.
func (s series) summarize() summary {
	var out summary
	var rates, baseRates, p50s, p99s []float64
	for _, f := range s.figure {
		rates = append(rates, f.rate())
		p50s = append(p50s, ms(f.percentile(0.5)))
		p99s = append(p99s, ms(f.percentile(0.99)))
		out.errors += f.failed
		if f.failedTooOften() {
			out.badRuns++
		}
	}
	for _, b := range s.baseline {
		baseRates = append(baseRates, b.rate())
		out.baselineErrors += b.failed
		if b.failedTooOften() {
			out.badRuns++
		}
	}
	for i := range min(len(rates), len(baseRates)) {
		r := 0.0
		if baseRates[i] > 0 {
			r = round(rates[i]/baseRates[i], 3)
		}
		out.runRatios = append(out.runRatios, r)
	}
	out.rate, out.baselineRate = median(rates), median(baseRates)
	out.p50, out.p99 = median(p50s), median(p99s)
	if out.baselineRate > 0 {
		out.ratio = out.rate / out.baselineRate
	}
	return out
}

// median returns the median of xs (the mean of the middle two for an even count), zero for none.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	xs = slices.Clone(xs)
	slices.Sort(xs)
	m := len(xs) / 2
	if len(xs)%2 == 1 {
		return xs[m]
	}
	return (xs[m-1] + xs[m]) / 2
}

// ms returns d in milliseconds.
func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// round rounds x to the given number of decimals, for results that read well.
func round(x float64, decimals int) float64 {
	p := math.Pow10(decimals)
	return math.Round(x*p) / p
}
