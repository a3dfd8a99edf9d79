package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/moatsh/moat"
	"github.com/moatsh/moat/errdefs"
)

// metrics are the Server's Prometheus metrics, in a registry of its own so that several
// servers (tests) do not collide.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	execs    *prometheus.CounterVec
	execDur  *prometheus.HistogramVec
}

func newMetrics(m *moat.Manager) *metrics {
	x := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_http_requests_total", Help: "HTTP requests by method, route and status code.",
		}, []string{"method", "route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "moat_http_request_duration_seconds", Help: "HTTP request latency by method and route.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"method", "route"}),
		execs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "moat_exec_total", Help: "Commands run, by backend, mode (json, ndjson, websocket, terminal) and result kind (ok or an error kind).",
		}, []string{"backend", "mode", "result"}),
		execDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "moat_exec_duration_seconds", Help: "Command durations by backend.",
			Buckets: prometheus.ExponentialBuckets(0.001, 4, 10),
		}, []string{"backend"}),
	}
	x.reg.MustRegister(x.requests, x.latency, x.execs, x.execDur, &sandboxCollector{m: m},
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return x
}

func (x *metrics) handler() http.Handler {
	return promhttp.HandlerFor(x.reg, promhttp.HandlerOpts{})
}

func (x *metrics) observeRequest(method, route string, code int, d time.Duration) {
	method = methodLabel(method)
	x.requests.WithLabelValues(method, route, strconv.Itoa(code)).Inc()
	x.latency.WithLabelValues(method, route).Observe(d.Seconds())
}

// methodLabel keeps the standard methods and calls anything else "other": the method is
// the client's choice (also before auth), and every distinct label value is a series kept
// for the life of the process.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return "other"
}

func (x *metrics) observeExec(backendName, mode string, d time.Duration, err error) {
	result := "ok"
	if err != nil {
		result = string(errdefs.KindOf(err))
	}
	x.execs.WithLabelValues(backendName, mode, result).Inc()
	if d > 0 {
		x.execDur.WithLabelValues(backendName).Observe(d.Seconds())
	}
}

// sandboxCollector counts live sandboxes by backend and status from the store at scrape
// time, so the gauge is right also when other processes share the store.
type sandboxCollector struct{ m *moat.Manager }

var sandboxesDesc = prometheus.NewDesc("moat_sandboxes", "Sandboxes (not destroyed) by backend and status.", []string{"backend", "status"}, nil)

func (c *sandboxCollector) Describe(ch chan<- *prometheus.Desc) { ch <- sandboxesDesc }

func (c *sandboxCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	infos, err := c.m.List(ctx, moat.ListFilter{})
	if err != nil {
		ch <- prometheus.NewInvalidMetric(sandboxesDesc, err)
		return
	}
	type key struct{ b, s string }
	counts := map[key]int{}
	for _, i := range infos {
		counts[key{i.Backend, string(i.Status)}]++
	}
	for k, n := range counts {
		ch <- prometheus.MustNewConstMetric(sandboxesDesc, prometheus.GaugeValue, float64(n), k.b, k.s)
	}
}
