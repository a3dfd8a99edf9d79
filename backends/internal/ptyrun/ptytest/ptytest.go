// Package ptytest answers "does this backend's terminal behave like a terminal?": the
// checks every local backend's backend.PTYExecer runs in its tests (a shell on a pty,
// window size and resize, end of input, cancellation, a missing program), so the three
// backends are held to the same behaviour.
package ptytest

import (
	"context"
	"errors"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moatsh/moat/backend"
	"github.com/moatsh/moat/errdefs"
	"github.com/moatsh/moat/internal/syncbuf"
	"github.com/moatsh/moat/internal/testenv"
)

// Options adapt the checks to a backend.
type Options struct {
	// TTY matches what `tty` prints inside the sandbox; "" means /dev/pts/<n>.
	TTY string
	// Workdir is the request's working directory; "" means "/".
	Workdir string
	// Env is the request's environment (the manager always passes one).
	Env map[string]string
	// NoSizeAtStart, when set, says why the initial size may show only a moment after the
	// program started (it still must before the first keystroke arrives).
	NoSizeAtStart string
	// AfterCancel, when set, runs after the cancellation check with the output of
	// `sh -c 'sleep 60 & echo pid=$!; wait'` (the sleep's pid as the sandbox sees it), to
	// check the sleep is gone.
	AfterCancel func(t *testing.T, pid string)
}

// Buffer is the concurrency-safe output buffer the checks wait on.
type Buffer = syncbuf.Buffer

// NewBuffer returns an empty Buffer.
func NewBuffer() *Buffer { return syncbuf.New() }

type result struct {
	code int
	err  error
}

// start runs argv on a terminal in the background.
func start(ctx context.Context, pe backend.PTYExecer, o Options, argv []string, stdin io.Reader,
	size backend.WinSize, resize <-chan backend.WinSize) (*Buffer, <-chan result) {
	out := NewBuffer()
	wd := o.Workdir
	if wd == "" {
		wd = "/"
	}
	done := make(chan result, 1)
	go func() {
		code, err := pe.ExecPTY(ctx, &backend.ExecRequest{Argv: argv, Env: o.Env, Workdir: wd,
			Stdin: stdin, Stdout: out, Stderr: out}, size, resize)
		done <- result{code, err}
	}()
	return out, done
}

func wait(t *testing.T, done <-chan result, out *Buffer, timeout time.Duration) result {
	t.Helper()
	select {
	case r := <-done:
		return r
	case <-time.After(timeout):
		t.Fatalf("ExecPTY did not return within %v; output: %q", timeout, out.String())
		return result{}
	}
}

// Run runs every check against pe, one sandbox for all of them.
func Run(t *testing.T, pe backend.PTYExecer, o Options) {
	ttyRE := o.TTY
	if ttyRE == "" {
		ttyRE = `/dev/pts/[0-9]+`
	}
	t.Run("Shell", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, done := start(ctx, pe, o, []string{"sh"},
			strings.NewReader("echo $((6*7)); tty; exit 5\n"), backend.WinSize{Rows: 24, Cols: 80}, nil)
		r := wait(t, done, out, 30*time.Second)
		if r.err != nil {
			t.Fatalf("ExecPTY: %v; output %q", r.err, out.String())
		}
		got := out.String()
		// The terminal echoes the input line, which holds "6*7" but not "42"; a prompt may
		// precede an answer on its line.
		if !regexp.MustCompile(`(^|[\n ])42\r?\n`).MatchString(got) {
			t.Errorf("output lacks 42 on a line of its own: %q", got)
		}
		if !regexp.MustCompile(`(^|[\n ])` + ttyRE + `\r?\n`).MatchString(got) {
			t.Errorf("tty printed no terminal matching %s: %q", ttyRE, got)
		}
		if strings.Contains(got, "not a tty") {
			t.Errorf("stdin is not a terminal: %q", got)
		}
		if r.code != 5 {
			t.Errorf("exit code %d, want 5; output %q", r.code, got)
		}
	})
	t.Run("ControllingTerminal", func(t *testing.T) {
		// /dev/tty opens only for a process with a controlling terminal: job control and
		// ^C depend on it.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, done := start(ctx, pe, o, []string{"sh", "-c", ": </dev/tty && echo ctty-$((3+4))"}, nil,
			backend.WinSize{Rows: 24, Cols: 80}, nil)
		r := wait(t, done, out, 30*time.Second)
		if r.err != nil || r.code != 0 || !strings.Contains(out.String(), "ctty-7") {
			t.Fatalf("ExecPTY = %d, %v; output %q; want ctty-7", r.code, r.err, out.String())
		}
	})
	t.Run("SizeAndResize", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		inR, inW := io.Pipe()
		defer inW.Close()
		resize := make(chan backend.WinSize)
		out, done := start(ctx, pe, o, []string{"sh"}, inR, backend.WinSize{Rows: 30, Cols: 100}, resize)
		// The prompt may precede the answer on its line (dash prints no newline after it).
		size := regexp.MustCompile(`(?:^|[\n ])([0-9]+ [0-9]+)\r?\n`)
		if _, err := io.WriteString(inW, "stty size\n"); err != nil {
			t.Fatal(err)
		}
		got, off := out.WaitFor(t, size, 0, 20*time.Second)
		if got != "30 100" {
			t.Fatalf("initial stty size = %q, want 30 100; output %q", got, out.String())
		}
		select {
		case resize <- backend.WinSize{Rows: 40, Cols: 120}:
		case r := <-done:
			t.Fatalf("ExecPTY returned early: %d %v; output %q", r.code, r.err, out.String())
		}
		// A resize travels apart from the keystrokes (for docker, as its own API call), so
		// ask again until the new size shows, within a bound.
		for attempt := 0; ; attempt++ {
			if _, err := io.WriteString(inW, "stty size\n"); err != nil {
				t.Fatal(err)
			}
			got, off = out.WaitFor(t, size, off, 20*time.Second)
			if got == "40 120" {
				break
			}
			if got != "30 100" || attempt == 20 {
				t.Fatalf("stty size after resize = %q, want 40 120; output %q", got, out.String())
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, err := io.WriteString(inW, "exit 3\n"); err != nil {
			t.Fatal(err)
		}
		r := wait(t, done, out, 20*time.Second)
		if r.err != nil || r.code != 3 {
			t.Fatalf("ExecPTY = %d, %v; want 3, nil; output %q", r.code, r.err, out.String())
		}
	})
	t.Run("EndOfInput", func(t *testing.T) {
		// No exit command: the end of stdin alone must end the shell.
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, done := start(ctx, pe, o, []string{"sh"}, strings.NewReader("echo in-$((1+1))\n"),
			backend.WinSize{Rows: 24, Cols: 80}, nil)
		r := wait(t, done, out, 30*time.Second)
		if r.err != nil || r.code != 0 {
			t.Fatalf("ExecPTY = %d, %v; want 0, nil; output %q", r.code, r.err, out.String())
		}
		if !strings.Contains(out.String(), "in-2") {
			t.Fatalf("output lacks in-2: %q", out.String())
		}
	})
	t.Run("NilStdin", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, done := start(ctx, pe, o, []string{"sh", "-c", "cat; echo cat-done"}, nil,
			backend.WinSize{Rows: 24, Cols: 80}, nil)
		r := wait(t, done, out, 30*time.Second)
		if r.err != nil || r.code != 0 {
			t.Fatalf("ExecPTY = %d, %v; want 0, nil; output %q", r.code, r.err, out.String())
		}
		if s := out.String(); !strings.Contains(s, "cat-done") {
			t.Fatalf("output %q lacks cat-done", s)
		}
	})
	t.Run("SizeAtStart", func(t *testing.T) {
		// The size holds from the first instruction, before any keystroke.
		if o.NoSizeAtStart != "" {
			t.Skip(o.NoSizeAtStart)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		out, done := start(ctx, pe, o, []string{"stty", "size"}, nil, backend.WinSize{Rows: 12, Cols: 34}, nil)
		r := wait(t, done, out, 30*time.Second)
		if r.err != nil || r.code != 0 || !strings.Contains(out.String(), "12 34\r\n") {
			t.Fatalf("ExecPTY = %d, %v; output %q; want 12 34", r.code, r.err, out.String())
		}
	})
	t.Run("Cancel", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		inR, inW := io.Pipe() // never closed before the end: only cancellation can end it
		defer inW.Close()
		out, done := start(ctx, pe, o, []string{"sh", "-c", "sleep 60 & echo pid=$!; wait"}, inR,
			backend.WinSize{Rows: 24, Cols: 80}, nil)
		pid, _ := out.WaitFor(t, regexp.MustCompile(`pid=([0-9]+)`), 0, 30*time.Second)
		begin := time.Now()
		cancel()
		r := wait(t, done, out, 15*time.Second)
		if !errors.Is(r.err, context.Canceled) {
			t.Fatalf("err = %v, want one wrapping context.Canceled (code %d)", r.err, r.code)
		}
		t.Logf("returned %v after cancel", time.Since(begin))
		if o.AfterCancel != nil {
			o.AfterCancel(t, pid)
		}
	})
	t.Run("MissingProgram", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for _, argv0 := range []string{"moat-no-such-program", "/no/such/moat-program"} {
			out, done := start(ctx, pe, o, []string{argv0}, nil, backend.WinSize{Rows: 24, Cols: 80}, nil)
			r := wait(t, done, out, 30*time.Second)
			if !errdefs.Is(r.err, errdefs.KindNotFound) {
				t.Errorf("%s: ExecPTY = %d, %v; want a NotFound error; output %q", argv0, r.code, r.err, out.String())
			}
		}
	})
}

// Require skips t (or fails it under MOAT_TEST_REQUIRE) when this machine has no pty
// multiplexer.
func Require(t *testing.T) {
	t.Helper()
	reason := ""
	if _, err := os.Stat("/dev/ptmx"); err != nil {
		reason = "no /dev/ptmx: " + err.Error()
	}
	testenv.Require(t, "pty", reason)
}

// DestroyKills checks that Destroy ends a terminal that is running in inst, with an
// error, and that a destroyed sandbox starts none (NotFound). o gives the requests'
// workdir and environment.
func DestroyKills(t *testing.T, inst backend.Instance, o Options) {
	t.Helper()
	pe := inst.(backend.PTYExecer)
	size := backend.WinSize{Rows: 24, Cols: 80}
	out, done := start(context.Background(), pe, o, []string{"sh", "-c", "echo up-$((2+3)); sleep 60"}, nil, size, nil)
	out.WaitFor(t, regexp.MustCompile(`up-5`), 0, 20*time.Second)
	if err := inst.Destroy(context.Background()); err != nil {
		t.Fatal(err)
	}
	if r := wait(t, done, out, 15*time.Second); r.err == nil {
		t.Fatal("terminal ended without an error by Destroy")
	}
	_, done = start(context.Background(), pe, o, []string{"sh"}, nil, size, nil)
	if r := wait(t, done, out, 15*time.Second); !errdefs.Is(r.err, errdefs.KindNotFound) {
		t.Fatalf("ExecPTY after Destroy: %v, want NotFound", r.err)
	}
}

// WaitGone waits until process pid (as this machine sees it) has exited.
func WaitGone(t *testing.T, pid int) {
	t.Helper()
	if pid <= 0 {
		t.Fatalf("bad pid %d", pid)
	}
	for range 250 {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		// A zombie (state Z) is dead; its parent or init reaps it eventually.
		if err != nil || strings.Contains(string(b), ") Z ") {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("process %d still alive after cancel", pid)
}
