// Package bench answers "how fast is moat's exec compared with the naive paths?": Go
// benchmarks (no tests) that run, in one `go test -bench` process, `true` through moat on
// docker with the in-container agent, on docker through the Engine API, `docker exec` and
// `docker run --rm` through the CLI (the naive baselines), moat on bwrap and on the
// restricted host, and a plain fork/exec on the host; plus create+destroy per backend.
// scripts/bench.sh runs them and prints the ratios; BENCHMARKS.md keeps the results.
// Benchmarks whose runtime is missing skip with the reason (testenv); timings never fail.
package bench
