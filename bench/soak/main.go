// Command soak answers "does moatd stay correct and flat under sustained load?": it starts a
// real moatd on 127.0.0.1 with a temporary MOAT_HOME and a real local backend (docker when
// dockerd and the test image are there, else bwrap with MOAT_TEST_ROOTFS, else the
// restricted host), creates -sandboxes sandboxes through the Go client, runs -workers
// concurrent execs with file writes and reads mixed in for -duration, then destroys
// everything. It prints the error count, exec latency p50/p99 and moatd's RSS, and exits
// non-zero on any error, on RSS growth over -rss-growth-mib, or on a sandbox left behind.
// Bounded in count and in time, loopback only; `make soak` runs it. Not part of make test.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/moatsh/moat/client"
	"github.com/moatsh/moat/moattype"
)

func main() {
	moatd := flag.String("moatd", "bin/moatd", "moatd binary (moat-agent next to it)")
	backendName := flag.String("backend", "", "docker, bwrap or host (default: the first that works here)")
	nSandboxes := flag.Int("sandboxes", 50, "sandboxes to create")
	workers := flag.Int("workers", 200, "concurrent execs")
	duration := flag.Duration("duration", envDuration("SOAK_DURATION", 2*time.Minute), "how long to run the load (env SOAK_DURATION)")
	growth := flag.Int64("rss-growth-mib", envInt("SOAK_RSS_GROWTH_MIB", 64), "largest allowed moatd RSS growth between the warm start and the end")
	flag.Parse()
	os.Exit(run(*moatd, *backendName, *nSandboxes, *workers, *duration, *growth))
}

func envDuration(k string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(k)); err == nil {
		return d
	}
	return def
}

func envInt(k string, def int64) int64 {
	if n, err := strconv.ParseInt(os.Getenv(k), 10, 64); err == nil {
		return n
	}
	return def
}

func run(moatdPath, backendName string, nSandboxes, workers int, duration time.Duration, growthMiB int64) int {
	// A hard bound on the whole run, whatever hangs.
	ctx, cancel := context.WithTimeout(context.Background(), duration+10*time.Minute)
	defer cancel()

	if backendName == "" {
		backendName = pickBackend()
	}
	home, err := os.MkdirTemp("", "moat-soak-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 1
	}
	defer os.RemoveAll(home)
	token := randHex(16)
	if err := os.WriteFile(filepath.Join(home, "moat.toml"), []byte(config(home, backendName, token)), 0o600); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 1
	}
	d, err := startMoatd(ctx, moatdPath, home)
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 1
	}
	defer d.stop()
	fmt.Printf("soak: moatd pid %d on %s, backend %s, home %s\n", d.cmd.Process.Pid, d.url, backendName, home)
	rssIdle := rss(d.cmd.Process.Pid)

	c, err := client.New(d.url, client.WithToken(token))
	if err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		return 1
	}
	var errs errCounter

	// Create the sandboxes, 10 at a time.
	sbs := make([]*client.Sandbox, nSandboxes)
	t0 := time.Now()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 10)
	for i := range sbs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			sb, err := c.Create(ctx, moattype.Spec{Name: fmt.Sprintf("soak-%d", i), Labels: map[string]string{"soak": "1"}})
			if err != nil {
				errs.add("create", err)
				return
			}
			sbs[i] = sb
		}()
	}
	wg.Wait()
	sbs = slices.DeleteFunc(sbs, func(s *client.Sandbox) bool { return s == nil })
	fmt.Printf("soak: created %d sandboxes in %s\n", len(sbs), time.Since(t0).Round(time.Millisecond))
	if len(sbs) == 0 {
		return report(&errs, nil, rssIdle, 0, 0, growthMiB)
	}

	// The load: each worker loops on its sandbox, exec'ing and every fourth round writing
	// and reading back a file of its own.
	load := func(until time.Time) []time.Duration {
		var mu sync.Mutex
		var lat []time.Duration
		var wg sync.WaitGroup
		for w := 0; w < workers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				sb := sbs[w%len(sbs)]
				var mine []time.Duration
				payload := make([]byte, 16<<10)
				for n := 0; time.Now().Before(until) && ctx.Err() == nil; n++ {
					want := fmt.Sprintf("w%d-%d", w, n)
					st := time.Now()
					res, err := sb.Exec(ctx, moattype.ExecRequest{Cmd: []string{"echo", want}})
					mine = append(mine, time.Since(st))
					switch {
					case err != nil:
						errs.add("exec", err)
					case res.ExitCode != 0 || string(res.Stdout) != want+"\n":
						errs.add("exec", fmt.Errorf("exit %d, stdout %q, want %q", res.ExitCode, res.Stdout, want+"\n"))
					}
					if n%4 != 0 {
						continue
					}
					_, _ = rand.Read(payload)
					p := fmt.Sprintf("/tmp/soak-%d", w)
					if err := sb.WriteFile(ctx, p, bytes.NewReader(payload), 0o644); err != nil {
						errs.add("write", err)
						continue
					}
					var got bytes.Buffer
					if err := sb.ReadFile(ctx, p, &got); err != nil {
						errs.add("read", err)
					} else if !bytes.Equal(got.Bytes(), payload) {
						errs.add("read", fmt.Errorf("%s: read %d bytes that differ from the %d written", p, got.Len(), len(payload)))
					}
				}
				mu.Lock()
				lat = append(lat, mine...)
				mu.Unlock()
			}()
		}
		wg.Wait()
		return lat
	}
	// Warm up (pools, buffers, caches reach their size), then measure from there.
	warm := min(duration/6, 20*time.Second)
	load(time.Now().Add(warm))
	rssStart := rss(d.cmd.Process.Pid)
	fmt.Printf("soak: warmed up for %s; %d workers for %s\n", warm, workers, duration)
	t1 := time.Now()
	lat := load(time.Now().Add(duration))
	elapsed := time.Since(t1)
	rssEnd := rss(d.cmd.Process.Pid)
	fmt.Printf("soak: %d execs in %s (%.0f/s)\n", len(lat), elapsed.Round(time.Millisecond), float64(len(lat))/elapsed.Seconds())

	// Tear down and check that nothing is left.
	for _, sb := range sbs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			if err := sb.Destroy(ctx); err != nil {
				errs.add("destroy", err)
			}
		}()
	}
	wg.Wait()
	left, err := c.List(ctx, moattype.ListFilter{})
	if err != nil {
		errs.add("list", err)
	} else if len(left) != 0 {
		errs.add("leftover", fmt.Errorf("%d sandboxes still listed after destroying all", len(left)))
	}
	fmt.Printf("soak: moatd RSS idle %d MiB, warm start %d MiB, end %d MiB\n", rssIdle>>20, rssStart>>20, rssEnd>>20)
	return report(&errs, lat, rssIdle, rssStart, rssEnd, growthMiB)
}

func report(errs *errCounter, lat []time.Duration, rssIdle, rssStart, rssEnd, growthMiB int64) int {
	slices.Sort(lat)
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[min(len(lat)-1, int(float64(len(lat))*p))]
	}
	fmt.Printf("soak: errors %d; exec latency p50 %s p99 %s max %s\n", errs.n.Load(), pct(0.50).Round(time.Microsecond), pct(0.99).Round(time.Microsecond), pct(1).Round(time.Microsecond))
	code := 0
	if n := errs.n.Load(); n != 0 {
		fmt.Fprintf(os.Stderr, "soak: FAIL: %d errors\n", n)
		code = 1
	}
	if rssStart > 0 && rssEnd-rssStart > growthMiB<<20 {
		fmt.Fprintf(os.Stderr, "soak: FAIL: moatd RSS grew by %d MiB (bound %d MiB)\n", (rssEnd-rssStart)>>20, growthMiB)
		code = 1
	}
	return code
}

type errCounter struct {
	n  atomic.Int64
	mu sync.Mutex
}

func (e *errCounter) add(op string, err error) {
	if n := e.n.Add(1); n <= 20 {
		e.mu.Lock()
		fmt.Fprintf(os.Stderr, "soak: %s: %v\n", op, err)
		e.mu.Unlock()
	}
}

// pickBackend returns the first local backend that can run here.
func pickBackend() string {
	if exec.Command("docker", "image", "inspect", "moat-test-busybox:latest").Run() == nil {
		return "docker"
	}
	if _, err := exec.LookPath("bwrap"); err == nil && os.Getenv("MOAT_TEST_ROOTFS") != "" {
		return "bwrap"
	}
	return "host"
}

func config(home, backendName, token string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "home = %q\n[server]\nlisten = \"127.0.0.1:0\"\ntokens = [%q]\n[sandbox]\nbackend = %q\n", home, token, backendName)
	switch backendName {
	case "docker":
		b.WriteString("[backends.docker]\nimage = \"moat-test-busybox:latest\"\n")
	case "bwrap":
		fmt.Fprintf(&b, "[backends.bwrap]\nrootfs = %q\n", os.Getenv("MOAT_TEST_ROOTFS"))
	case "host":
		b.WriteString("allow_unisolated = true\n")
	}
	return b.String()
}

type daemon struct {
	cmd  *exec.Cmd
	url  string
	done chan struct{}
}

var urlRE = regexp.MustCompile(`on (http://127\.0\.0\.1:[0-9]+)`)

func startMoatd(ctx context.Context, path, home string) (*daemon, error) {
	cmd := exec.Command(path, "-c", filepath.Join(home, "moat.toml"), "--log-level", "warn")
	cmd.Env = append(os.Environ(), "MOAT_HOME="+home)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	d := &daemon{cmd: cmd, done: make(chan struct{})}
	urlCh := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if m := urlRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case urlCh <- m[1]:
				default:
				}
			}
		}
		_, _ = io.Copy(io.Discard, out)
	}()
	go func() { _ = cmd.Wait(); close(d.done) }()
	select {
	case d.url = <-urlCh:
		return d, nil
	case <-d.done:
		return nil, fmt.Errorf("moatd exited before serving: %v", cmd.ProcessState)
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
	}
	d.stop()
	return nil, fmt.Errorf("moatd did not start serving")
}

func (d *daemon) stop() {
	select {
	case <-d.done:
		return
	default:
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(30 * time.Second):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
}

// rss returns the resident set size of pid in bytes (0 when unknown).
func rss(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			kb, _ := strconv.ParseInt(f[1], 10, 64)
			return kb << 10
		}
	}
	return 0
}

func randHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
